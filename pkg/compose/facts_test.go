package compose

import (
	"reflect"
	"strings"
	"testing"
)

const factsCompose = `name: shop-app
x-build: &build
  build: .
services:
  web:
    <<: *build
    image: shop/web
    ports:
      - "80:8080"
      - target: 443
        published: 8443
        host_ip: 127.0.0.1
  worker:
    <<: *build
    command: ["worker"]
  db:
    image: postgres:16
    volumes: [data:/var/lib/postgresql/data]
volumes:
  data:
`

func TestReadComposeFacts(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    Facts
		wantErr string
	}{
		{
			name: "merges, build and ports",
			yaml: factsCompose,
			want: Facts{Name: "shop-app", Services: []ServiceFacts{
				{Name: "web", Build: true, Ports: []string{"80:8080", "127.0.0.1:8443:443"}},
				{Name: "worker", Build: true},
				{Name: "db"},
			}},
		},
		{
			name: "port forms",
			yaml: "services:\n  a:\n    image: x\n    ports: [8080, \"53:53/udp\", {target: 80}, {target: 53, published: \"5353\", protocol: udp, host_ip: \"::1\"}]\n",
			want: Facts{Services: []ServiceFacts{{Name: "a", Ports: []string{"8080", "53:53/udp", "80", "[::1]:5353:53/udp"}}}},
		},
		{
			name: "build: null is no build",
			yaml: "services:\n  a:\n    build:\n    image: x\n  b:\n    build: {context: ., dockerfile: Dockerfile.b}\n",
			want: Facts{Services: []ServiceFacts{{Name: "a"}, {Name: "b", Build: true}}},
		},
		{name: "empty", yaml: "", wantErr: "the file is empty"},
		{name: "a list", yaml: "- a\n", wantErr: "not a compose file"},
		{name: "no services", yaml: "name: x\n", wantErr: "no services"},
		{name: "services is a list", yaml: "services: [a]\n", wantErr: "no services"},
		{name: "bad YAML", yaml: "services: {a: [\n", wantErr: "not valid YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadFacts([]byte(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadFacts = %+v, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ReadFacts =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}
