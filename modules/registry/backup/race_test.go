//go:build race

package backup_test

// raceDetector: the test binary runs under -race, which slows the pure-Go
// SQLite driver about twelvefold.
const raceDetector = true
