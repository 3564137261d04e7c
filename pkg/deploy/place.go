package deploy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/release"
)

// ErrOtherEnvironment means a host's folder or compose project holds another
// environment's (or app's) release: deploying there would replace it.
var ErrOtherEnvironment = errors.New("the host's folder or project belongs to another environment")

// checkPlace refuses, before anything changes on the host, a deploy or rollback
// whose folder holds another environment's releases (release.json records the
// environment), whose compose project runs containers of another folder, or whose
// environment the host still runs under the project name of before projects were
// per environment. cs are the containers of the environment's project.
func checkPlace(ctx context.Context, s *session, h *hostConn, current string, cs []engine.Container) error {
	var info release.Info
	var err error = fs.ErrNotExist
	if current != "" {
		info, err = s.store(h).Info(ctx, current)
	}
	return checkPlaceInfo(ctx, s, h, current, info, err, cs)
}

// checkPlaceInfo is checkPlace with current's release.json as read already (infoErr
// when it could not be).
func checkPlaceInfo(ctx context.Context, s *session, h *hostConn, current string, info release.Info, infoErr error, cs []engine.Container) error {
	env, project := s.t.Env.Name, s.t.Project()
	if current != "" {
		if infoErr == nil && info.Env != "" && info.Env != env {
			return fmt.Errorf("%w: %s holds environment %s's releases (current: %s); deploying environment %s there would replace them: give each environment its own path in ship.yaml",
				ErrOtherEnvironment, s.l, info.Env, release.Short(current), env)
		}
	}
	for _, c := range cs {
		if c.WorkingDir != "" && !within(s.l.Releases(), c.WorkingDir) {
			return fmt.Errorf("%w: the compose project %s on this host runs %s from %s, not from %s: another environment or app uses this project name; set project: in ship.yaml to a name of its own",
				ErrOtherEnvironment, project, c.Name, c.WorkingDir, s.l.Releases())
		}
	}
	legacy, err := legacyProject(ctx, s, h, current, cs)
	if err != nil || !legacy {
		return err
	}
	return fmt.Errorf("%w: this host runs environment %s as compose project %s (named before projects were per environment; %s is its default now): add \"project: %s\" to environments.%s in ship.yaml to keep that name, or remove those containers first (docker compose -p %s down) to start %s beside nothing",
		ErrOtherEnvironment, env, s.t.App, project, s.t.App, env, s.t.App, project)
}

// legacyProject reports whether the host runs the environment under the app's own
// name, as before projects were per environment: the folder has a release, the
// environment's project (cs) runs nothing, and the app's name runs containers of
// this folder.
func legacyProject(ctx context.Context, s *session, h *hostConn, current string, cs []engine.Container) (bool, error) {
	if current == "" || len(cs) > 0 || s.t.Project() == s.t.App {
		return false, nil
	}
	old, err := h.Containers(ctx, s.t.App)
	if err != nil {
		return false, err
	}
	for _, c := range old {
		if c.WorkingDir != "" && within(s.l.Releases(), c.WorkingDir) {
			return true, nil
		}
	}
	return false, nil
}

// releaseOf is the release whose folder is a container's working directory, when it
// is one of l's: "" otherwise.
func releaseOf(l release.Layout, workingDir string) string {
	if workingDir == "" || path.Dir(workingDir) != l.Releases() {
		return ""
	}
	return path.Base(workingDir)
}
