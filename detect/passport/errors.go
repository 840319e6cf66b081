package passport

import "errors"

// The errors a caller matches with errors.Is. Each is wrapped with the
// detail of the failure; no detail ever carries a telephone number, since
// errors end up in logs.
var (
	// ErrNoIdentity: the request carries no Identity header.
	ErrNoIdentity = errors.New("passport: no Identity header")
	// ErrMalformed: the header value, the token or the claims do not parse,
	// or a required claim is missing.
	ErrMalformed = errors.New("passport: malformed")
	// ErrAlgorithm: alg (header parameter or JWS header) is not ES256.
	ErrAlgorithm = errors.New("passport: algorithm is not ES256")
	// ErrUnsupported: a PASSporT this package does not take: typ not
	// "passport", a ppt extension, a crit header, or the compact form.
	ErrUnsupported = errors.New("passport: unsupported PASSporT")
	// ErrSignature: the signature does not verify with the device's key.
	ErrSignature = errors.New("passport: bad signature")
	// ErrStale: iat is older than the verifier's window.
	ErrStale = errors.New("passport: token too old")
	// ErrFuture: iat is further ahead than the verifier's window.
	ErrFuture = errors.New("passport: token issued in the future")
	// ErrOrig: orig is not the number the request presents as the caller.
	ErrOrig = errors.New("passport: orig does not match the caller")
	// ErrDest: no dest is the number the request is for.
	ErrDest = errors.New("passport: dest does not match the called number")
	// ErrBinding: cb is not the binding of the request's Call-ID and From tag.
	ErrBinding = errors.New("passport: call binding does not match")
	// ErrReplay: the device's counter was seen before, or is too far below
	// the highest seen to tell.
	ErrReplay = errors.New("passport: counter replayed")
	// ErrCapacity: the verifier tracks as many keys as it may and none of
	// them is idle long enough to forget.
	ErrCapacity = errors.New("passport: too many keys tracked")

	// ErrNotNumber: a string is not a telephone number Canonical can take.
	ErrNotNumber = errors.New("passport: not a telephone number")

	// ErrKeyPermissions: the key file is open to group or others.
	ErrKeyPermissions = errors.New("passport: key file permissions too open")
	// ErrKeyType: the key is not an ECDSA P-256 key.
	ErrKeyType = errors.New("passport: key is not ECDSA P-256")
	// ErrKeyFormat: no PEM key block that parses (private or public).
	ErrKeyFormat = errors.New("passport: key is not PEM of a known form")
)
