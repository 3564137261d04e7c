package certs

import "time"

// SetRenewalInfoBounds sets how often renewal information is asked for by Managers made
// after it, until the test ends.
func SetRenewalInfoBounds(t interface{ Cleanup(func()) }, lo, hi time.Duration) {
	oldLo, oldHi := renewalInfoMin, renewalInfoMax
	renewalInfoMin, renewalInfoMax = lo, hi
	t.Cleanup(func() { renewalInfoMin, renewalInfoMax = oldLo, oldHi })
}
