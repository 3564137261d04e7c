package cli

import (
	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/image"
	"github.com/shipdeploy/ship/pkg/install"
	"github.com/shipdeploy/ship/pkg/testrun"
)

func init() {
	for _, m := range []struct {
		err  error
		code int
	}{
		{config.ErrInvalid, ExitUsage},
		{compose.ErrInvalid, ExitUsage},
		{engine.ErrUnsupported, ExitUsage},
		{install.ErrBinary, ExitUsage},
		{image.ErrEnvCredentials, ExitUsage},
		{testrun.ErrTestsFailed, ExitTestsFailed},
		// A deploy's error matches the worst that happened on a host; these go in
		// that order.
		{deploy.ErrRestoreFailed, ExitRestoreFailed},
		// Not seen to end (shipd did not answer again in time): check the host, as
		// after a failed restore. Cancelled by the user, it is 130.
		{deploy.ErrOutcomeUnknown, ExitRestoreFailed},
		{deploy.ErrDeployFailed, ExitDeployFailed},
		{deploy.ErrLocked, ExitLocked},
	} {
		errorCodes = append(errorCodes, struct {
			err  error
			code int
		}{m.err, m.code})
	}
}
