// Package detect watches SIP signalling on the device and decides what the
// terms forbid: the SIP sources (a proxy on emiago/sipgo, passive capture
// later), dialog tracking, and the rules with the policy they read.
//
// Rules are pure, events and the time in and verdicts out, so the same code
// runs in the proxy, in tests and over recorded traffic. detect never writes
// the store itself: it emits usage and violation records to a sink that the
// agent connects to the store. It imports store/phone at most.
//
// This package holds what the parts share: the direction of a message, the
// lines of the device, and the decision hook between a SIP source and the
// rules. The proxy is in detect/sipproxy, the call tracker in detect/dialog.
package detect
