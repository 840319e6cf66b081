package sipproxy

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// answers remembers, for the transaction linger, the final answer the
// proxy gave each request that came over UDP, so that a retransmission of
// a request already answered is answered again (or absorbed) as its server
// transaction would have done (RFC 3261 17.2, RFC 6026), without the
// transaction being kept.
//
// Why not sipgo's transactions: a transaction kept for the linger holds the
// request, its answer and its state machine, and ends by a timer of its
// own, whose firing starts a goroutine and wakes the runtime's monitor
// thread. At 100 calls/s that was a quarter of the agent's context switches
// (36 against 27 a call with the linger at 0; docs/sip.md). Here an answer
// is one entry in a ring, dropped when a later one needs its place after
// the linger: no timer, no goroutine, and only the answer is held.
//
// The ring is bounded (answersMax): past it, the oldest entry goes even
// within its linger, and a retransmission of that request is relayed
// again as a new one, as one arriving after the linger always was. A
// retransmission that meets sipgo's transaction in the instant between its
// end and its removal is dropped by sipgo; the sender's next one finds the
// answer here.
type answers struct {
	mu   sync.Mutex
	byID map[answerKey]int32 // ring index
	ring []answerEntry
	head int // oldest
	n    int
}

// answersMax bounds the answers kept: at the default linger of 100 ms,
// 20,000 requests a second, ten times the agent's capacity here.
const answersMax = 2048

// answerKey matches a request to the transaction it belongs to (RFC 3261
// 17.2.3): the top Via's branch and sent-by, and the method, an ACK's
// being its INVITE's.
type answerKey struct {
	branch string
	host   string
	port   int
	method sip.RequestMethod
}

type answerEntry struct {
	key answerKey
	at  int64 // unix ns
	res *sip.Response
}

// lingerNs is how long answers are kept (SetTransactionLinger): a process
// setting, as sipgo's own timers were.
var lingerNs atomic.Int64

func newAnswers() *answers {
	return &answers{byID: make(map[answerKey]int32, answersMax), ring: make([]answerEntry, answersMax)}
}

// keyOf is req's transaction key; ok is false for a request without a
// usable Via or CSeq, or with a branch from before RFC 3261 (its
// transactions are matched otherwise; it is relayed as before).
func keyOf(req *sip.Request) (answerKey, bool) {
	via, cseq := req.Via(), req.CSeq()
	if via == nil || cseq == nil {
		return answerKey{}, false
	}
	branch, _ := via.Params.Get("branch")
	if !strings.HasPrefix(branch, sip.RFC3261BranchMagicCookie) || len(branch) == len(sip.RFC3261BranchMagicCookie) {
		return answerKey{}, false
	}
	m := cseq.MethodName
	if m == sip.ACK {
		m = sip.INVITE
	}
	return answerKey{branch: branch, host: via.Host, port: via.Port, method: m}, true
}

// remember keeps res, the final answer to req, for the linger. Only
// answers to UDP requests are kept: over TCP and TLS there are no
// retransmissions.
func (a *answers) remember(req *sip.Request, res *sip.Response) {
	linger := lingerNs.Load()
	if linger <= 0 || res.StatusCode < 200 || !strings.EqualFold(req.Transport(), "udp") {
		return
	}
	k, ok := keyOf(req)
	if !ok {
		return
	}
	at := time.Now().UnixNano()
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.n > 0 && (a.n == len(a.ring) || at-a.ring[a.head].at > linger) {
		a.dropOldest()
	}
	if i, ok := a.byID[k]; ok {
		a.ring[i].res = res // a second final answer (a fork's 2xx): the latest is what a retransmission gets
		return
	}
	i := (a.head + a.n) % len(a.ring)
	a.ring[i] = answerEntry{key: k, at: at, res: res}
	a.byID[k] = int32(i)
	a.n++
}

func (a *answers) dropOldest() {
	e := &a.ring[a.head]
	if i, ok := a.byID[e.key]; ok && int(i) == a.head {
		delete(a.byID, e.key)
	}
	*e = answerEntry{}
	a.head = (a.head + 1) % len(a.ring)
	a.n--
}

// lookup returns the answer kept for req's transaction, or for its
// transaction had it been a request of method as (a CANCEL's INVITE), or
// nil.
func (a *answers) lookup(req *sip.Request, as sip.RequestMethod) *sip.Response {
	if !strings.EqualFold(req.Transport(), "udp") {
		return nil
	}
	k, ok := keyOf(req)
	if !ok {
		return nil
	}
	if as != "" {
		k.method = as
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	i, ok := a.byID[k]
	if !ok || time.Now().UnixNano()-a.ring[i].at > lingerNs.Load() {
		return nil
	}
	return a.ring[i].res
}

// len is the number of answers kept.
func (a *answers) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// absorbed answers a retransmission of a request the proxy has already
// answered, from the answer kept, and reports whether it did; the request
// then goes no further. As a server transaction would (RFC 3261 17.2.1,
// 17.2.2; RFC 6026 for an INVITE answered 2xx):
//   - an ACK for a failure answer ends there; an ACK for a 2xx is a
//     transaction of its own, relayed end to end, as is one reusing the
//     INVITE's branch after a 2xx (RFC 2543 user agents);
//   - an INVITE answered 2xx is absorbed: the 2xx is the answering side's
//     to retransmit, relayed statelessly (strayResponse);
//   - a CANCEL whose INVITE is answered is answered 200, and changes
//     nothing;
//   - any other request gets its final answer again.
func (p *Proxy) absorbed(req *sip.Request, tx sip.ServerTransaction) bool {
	res := p.answers.lookup(req, "")
	if res == nil {
		if req.IsCancel() && p.answers.lookup(req, sip.INVITE) != nil {
			p.c.retrans.Add(1)
			p.reply(tx, req, sip.StatusOK, "", "")
			return true
		}
		return false
	}
	switch {
	case req.IsAck():
		if res.IsSuccess() {
			return false
		}
	case req.IsInvite() && res.IsSuccess():
	default:
		if err := tx.Respond(res); err != nil {
			p.log.Debug("answer to a retransmission not sent", "call_id", callID(req), "err", err)
		}
	}
	p.c.retrans.Add(1)
	return true
}
