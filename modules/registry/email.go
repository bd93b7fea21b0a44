package registry

// CheckEmail returns ErrInvalidEmail for an address the registry would
// refuse, so that importers apply the same rule as the API.
func CheckEmail(email string) error { return checkEmail(email) }
