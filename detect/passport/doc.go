// Package passport signs and verifies the Identity header (RFC 8224) that
// the agent puts on every dialog-creating INVITE it relays upstream, so
// the Leadport edge can tell calls that passed an agent from calls that
// did not. The token is a full-form PASSporT (RFC 8225), a compact JWS
// signed ES256 with a key that lives only on the device.
//
// # Data flow
//
//	agent:    FileKey (or a TPM Signer) --Sign(Header, Claims)--> token
//	          IdentityHeader(token, info) --> "Identity:" on the INVITE
//	edge:     *sip.Request --Verify(req, enrolled key)--> *Claims or error
//	          ParseIdentity -> Parse (signature) -> clock, call, counter
//
// # The header
//
//	Identity: <header>.<payload>.<signature>;info=<URI>;alg=ES256
//
// info names the device's enrolled key; the token's x5u header carries
// the same URI. There is no ppt parameter or header member: stock
// verifiers refuse extensions they do not know, and this is not SHAKEN.
// The JWS header is {"alg":"ES256","typ":"passport","x5u":"<info URI>"}.
//
// Header and payload are serialised as RFC 8225 section 9 asks
// (lexicographic key order, no whitespace); the structs declare their
// fields in that order. The signature is the 64-byte R||S of JWS
// (RFC 7518 section 3.4), not the ASN.1 form crypto.Signer returns.
//
// # Claims
//
// From RFC 8225:
//
//   - iat: when the token was made, in seconds since the epoch.
//   - orig: {"tn": caller}, the number the call presents.
//   - dest: {"tn": [called, ...]}, the numbers it is for.
//   - origid: a random UUID naming the call's origination (NewOrigID).
//
// Numbers are in the canonical form of RFC 8224 section 8.3 (Canonical):
// the agent signs E.164 numbers, "+15551234567" as "15551234567".
//
// Leadport's private claims, short because they travel on every INVITE:
//
//   - dev: the device id (string).
//   - ctr: a per-device counter (uint64) that starts at 1, rises with
//     every token and never repeats, across restarts and key rotations. A
//     device that lost it (a wiped store) must not restart from 1: the
//     edge would refuse every call as a replay. Starting again from the
//     current time in microseconds lands above anything issued before.
//   - pol: the version of the policy the agent applied (int).
//   - vrd: the verdict, "allowed" or "observed" (rules matched but are
//     only observing). Blocked calls are answered by the agent and never
//     signed.
//   - rules: the ids of the rules that matched, when observed; omitted
//     when empty.
//   - cb: the call binding, BASE64URL(SHA-256(Call-ID "\n" From-tag)),
//     no padding (Binding). It ties the token to one dialog, as orig and
//     dest alone would let a token be reused for another call between the
//     same numbers within the freshness window.
//
// # Keys
//
// Sign takes a Signer, which is crypto.Signer by another name: anything
// whose Public is a P-256 *ecdsa.PublicKey and whose Sign returns an ASN.1
// ECDSA signature of a SHA-256 digest. FileKey keeps the key in a file
// (PKCS#8 PEM, mode 0600, written atomically). On devices with a TPM 2.0
// or a secure element, make the key there, non-exportable, and pass the
// crypto.Signer its library returns (go-tpm-tools' client.Key.GetSigner,
// a PKCS#11 signer, an ATECC608 driver): Sign converts the signature, and
// the private key never reaches the file system. Either way the platform
// enrols the key by its PublicKeyPEM and names it by its Thumbprint.
//
// # Verifying
//
// Verifier checks, in order, each failure its own error: the header is
// there (ErrNoIdentity) and parses (ErrMalformed); alg is ES256
// (ErrAlgorithm); typ is passport, no ppt, no crit, full form
// (ErrUnsupported); the signature (ErrSignature); iat within the window
// either way (ErrStale, ErrFuture); orig is the caller of the request,
// from P-Asserted-Identity or else From (ErrOrig); a dest is the
// Request-URI's or the To number (ErrDest); cb is the request's binding
// (ErrBinding); and the counter is new for the key (ErrReplay), in the
// manner of IPsec's anti-replay window, so calls that arrive out of order
// are still taken, once each.
//
// # Stock verifiers
//
// kamailio's secsipid module (libsecsipid, from secsipidx; checked here
// against secsipidx 1.2.0, Debian bookworm's) accepts these headers with
// secsipid_check_identity_pubkey(PEM) or secsipid_check_identity(path).
// What it holds a header to: the token is three base64url parts and the
// signature 64 bytes R||S; iat is non-zero and not older than the
// module's "expire" parameter (300 s by default; one-sided, iat in the
// future passes); alg, typ and ppt, when present, are ES256, passport and
// shaken, in the JWS header and as header parameters alike; x5u, when
// present, equals the info URI. secsipid_check_identity(path) refuses a
// header without parameters, and with parameters present info is
// required. It reads only the first Identity header, removes all
// whitespace and splits at every ';' and '=', so an info URI must hold
// neither (Sign refuses such an x5u). It ignores claims it does not know
// and requires none but iat.
//
// It checks nothing about the call: not orig or dest, not cb, not
// counters. An edge relying on it alone gets the signature and freshness;
// the call binding and replay protection are Verifier's.
package passport
