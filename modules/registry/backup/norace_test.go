//go:build !race

package backup_test

const raceDetector = false
