// Package apierror names the errors of the Gatehouse HTTP API: the
// "error" field of its JSON error bodies, {"error": NAME, "reason": TEXT}.
// They are written once here for the server (modules/regapi) and its two
// clients (modules/dnsprovider and the gateway agent), so that a renamed
// or new error cannot drift between them. The package imports nothing, so
// a client takes no server code with it.
package apierror

// The names, each with the status the server answers it with.
const (
	// BadRequest (400): malformed parameters, body or record.
	BadRequest = "BadRequest"
	// InvalidName (400): the name breaks the name rules.
	InvalidName = "InvalidName"
	// UnavailableName (400): the name is taken or reserved.
	UnavailableName = "UnavailableName"
	// UnavailableNameReclamationPossible (400): taken, and its owner has a
	// verified email, so a reclamation can be asked for.
	UnavailableNameReclamationPossible = "UnavailableNameReclamationPossible"
	// ReclamationTokenMismatch (400): a wrong reclamation token.
	ReclamationTokenMismatch = "ReclamationTokenMismatch"
	// ExpiredToken (400): a verification or reclamation token too old.
	ExpiredToken = "ExpiredToken"
	// NoEmail (400): the flow needs a verified email the gateway lacks.
	NoEmail = "NoEmail"
	// InvalidEmail (400): not an email address.
	InvalidEmail = "InvalidEmail"
	// NoSuchName (400 or 404): no gateway of that name.
	NoSuchName = "NoSuchName"
	// UnsupportedType (400): a record type the zone does not serve.
	UnsupportedType = "UnsupportedType"
	// Conflict (400): records DNS could not serve together (a CNAME
	// beside other data).
	Conflict = "Conflict"
	// TooManyRecords (400): past the records limit of a subtree.
	TooManyRecords = "TooManyRecords"
	// RecordsTooLarge (400): the records at one name would not fit an
	// answer.
	RecordsTooLarge = "RecordsTooLarge"
	// Unauthorized (401): no token, or an unknown one.
	Unauthorized = "Unauthorized"
	// OutsideSubtree (403): a record or zone the token may not touch.
	OutsideSubtree = "OutsideSubtree"
	// GatewayDisabled (403): the operator disabled the gateway; its token
	// is refused until it is enabled again.
	GatewayDisabled = "GatewayDisabled"
	// NotFound (404): the gateway or object does not exist.
	NotFound = "NotFound"
	// BodyTooLarge (413): a request body over the limit.
	BodyTooLarge = "BodyTooLarge"
	// RateLimited (429): too many requests from the client's address.
	RateLimited = "RateLimited"
	// InternalError (500): the server failed; the reason says no more.
	InternalError = "InternalError"
	// EmailUnavailable (503): the server has no mail configured.
	EmailUnavailable = "EmailUnavailable"
	// InvalidDomain (400): not a domain name, or one inside the zone.
	InvalidDomain = "InvalidDomain"
	// DomainTaken (409): another gateway holds the custom domain.
	DomainTaken = "DomainTaken"
	// DomainNotDelegated (422): the custom domain's CNAMEs are missing or
	// point elsewhere; the reason names the record.
	DomainNotDelegated = "DomainNotDelegated"
	// NoSuchDomain (404): the gateway holds no such custom domain.
	NoSuchDomain = "NoSuchDomain"
	// TooManyDomains (400): the gateway holds as many custom domains as
	// one may.
	TooManyDomains = "TooManyDomains"
)

// Body is the JSON body of every error answer.
type Body struct {
	Error  string `json:"error"`
	Reason string `json:"reason,omitempty"`
}
