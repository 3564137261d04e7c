package compose

import (
	"strings"

	"github.com/distribution/reference"
)

// ImageName is the image a service is built as: its `image:` without tag, or
// <project>/<service> for a `build:` without `image:`.
func (p *Project) ImageName(service string) string {
	s := p.Services[service]
	if s.Image == "" {
		return p.Name + "/" + service
	}
	return withoutTag(s.Image)
}

func withoutTag(image string) string {
	if named, err := reference.ParseNormalizedNamed(image); err == nil {
		// Keep the user's spelling (no docker.io/library/ added), minus tag and digest.
		if i := strings.LastIndex(image, "@"); i >= 0 {
			image = image[:i]
		}
		if tagged, ok := named.(reference.Tagged); ok {
			image = strings.TrimSuffix(image, ":"+tagged.Tag())
		}
	}
	return image
}

// PinImages points every service with `build:` at the image ref returns for it, and
// with it every service that names the same image (a job using the app's image).
// Built records what each built service is built as.
func (p *Project) PinImages(ref func(image string) string) {
	pinned := map[string]string{}
	for _, name := range p.ServicesInOrder() {
		s := p.Services[name]
		if s.Build == nil {
			continue
		}
		image := p.ImageName(name)
		pinned[image] = ref(image)
		p.Built[name] = pinned[image]
	}
	for _, name := range p.ServicesInOrder() {
		s := p.Services[name]
		to, ok := pinned[p.ImageName(name)]
		if !ok || (s.Build == nil && s.Image == "") {
			continue
		}
		s.Image = to
		p.Services[name] = s
	}
}

// RegistryRef pins images to <registry>/<image>:<tag>. An image already written with
// the registry in front keeps just one copy of it.
func RegistryRef(registry, tag string) func(image string) string {
	registry = strings.TrimSuffix(registry, "/")
	return func(image string) string {
		if registry != "" && !strings.HasPrefix(image, registry+"/") {
			image = registry + "/" + image
		}
		return image + ":" + tag
	}
}
