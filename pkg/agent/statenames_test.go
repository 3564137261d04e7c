package agent

import (
	"strings"
	"testing"
)

// The state file and the API take the names shipctl gives releases: <sha>-<hash of the
// resolved compose file>, with a dirty tree's suffix too, and the <sha> of releases
// deployed before names had a hash (issue 9 item 1).
func TestStateAcceptsReleaseNames(t *testing.T) {
	sha := strings.Repeat("0123456789", 4)
	for _, name := range []string{sha + "-0badf00d", sha + "-dirty-0123456789ab-0badf00d", sha} {
		state := strings.NewReplacer(`"release": "v2"`, `"release": "`+name+`"`, `"release": "v3"`, `"release": "`+name+`"`).Replace(validState)
		s, dropped, err := decodeState([]byte(state))
		if err != nil || len(dropped) > 0 || s.Apps["shop"] == nil || s.Apps["shop"].Release != name {
			t.Errorf("a state with release %s: %v, dropped %+v", name, err, dropped)
		}
		if err := checkRequest("shop-prod", "/srv/shop", name, true); err != nil {
			t.Errorf("a request for release %s: %v", name, err)
		}
	}
}
