package passport

import (
	"encoding/asn1"
	"math/big"
	"time"
)

// t0 is the tests' now: 2027-01-01T00:00:00Z.
var t0 = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)

func asn1Marshal(r, s *big.Int) ([]byte, error) {
	return asn1.Marshal(struct{ R, S *big.Int }{r, s})
}
