package agent

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/release"
)

// releaseLock releases shipctl's lock on the app's folder at the end of a deploy or
// rollback, as the request's unlock asks: shipctl would read holder.json and move the
// lock away over SFTP, two round trips after the result; here they cost none. The
// lock is released only while it is still the holder's of that token (one taken over
// since stays), the way shipctl's own unlock does it: .lock renamed under .tmp/ in one
// step, then removed. Anything else leaves the lock to shipctl, which releases it
// itself when the result does not say Unlocked.
func (a *agent) releaseLock(req request, em *emitter) bool {
	l := release.Layout(req.path)
	data, err := os.ReadFile(l.Holder())
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.log.Warn("read the lock", "app", req.app, "err", err)
		}
		return false
	}
	var h deploy.Holder
	if json.Unmarshal(data, &h) != nil || h.Token != req.unlock {
		return false
	}
	if err := os.MkdirAll(l.Tmp(), 0o755); err != nil {
		a.log.Warn("release the lock", "app", req.app, "err", err)
		return false
	}
	moved := l.Tmp() + "/unlocked-" + release.TempSuffix()
	if err := os.Rename(l.Lock(), moved); err != nil {
		a.log.Warn("release the lock", "app", req.app, "err", err)
		return false
	}
	if err := os.RemoveAll(moved); err != nil {
		// Released all the same; the next upload's ClearTmp removes what is left.
		a.log.Warn("remove the released lock", "path", moved, "err", err)
	}
	em.info(agentapi.StepLock, "", "unlocked")
	return true
}
