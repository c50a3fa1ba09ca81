package main

import (
	"bufio"
	"runtime/debug"
	"strings"
	"testing"
)

// The examples of README.md: each is a place where a YAML 1.2 reader (or a
// JSON reader that rejects duplicates) reads something else. If one of these
// fails, the oracle no longer behaves like kubernetes-mcp-server 0.0.67.
var manifestExamples = []struct {
	name, in, want string
}{
	{"merge key after the explicit key overrides it",
		"kind: VirtualMachineClone\nspec:\n  source:\n    name: vm-a\n    <<: {name: prod-db}\n",
		`{"ok":[{"kind":"VirtualMachineClone","spec":{"source":{"name":"prod-db"}}}]}`},
	{"merge key before the explicit key does not",
		"kind: VirtualMachineClone\nspec:\n  source:\n    <<: {name: prod-db}\n    name: vm-a\n",
		`{"ok":[{"kind":"VirtualMachineClone","spec":{"source":{"name":"vm-a"}}}]}`},
	{"U+2028 ends a comment: the rest of the line is a live key",
		"kind: Pod\nmetadata:\n  namespace: tenant-a # team A\u2028  namespace: kube-system\n",
		`{"ok":[{"kind":"Pod","metadata":{"namespace":"kube-system"}}]}`},
	{"U+0085 ends a comment too",
		"kind: ConfigMap # plain config\u0085kind: VirtualMachineClone\n",
		`{"ok":[{"kind":"VirtualMachineClone"}]}`},
	{"duplicate keys: the last wins",
		"kind: ConfigMap\nkind: VirtualMachineClone\n",
		`{"ok":[{"kind":"VirtualMachineClone"}]}`},
	{"a separator with a comment is not split by the server's regexp; the YAML reader drops the rest",
		"kind: ConfigMap\n--- # second\nkind: VirtualMachineClone\n",
		`{"ok":[{"kind":"ConfigMap"}]}`},
	{"CR-only line ends: the second document is dropped",
		"kind: ConfigMap\r---\rkind: VirtualMachineClone\r",
		`{"ok":[{"kind":"ConfigMap"}]}`},
	{"YAML 1.1 scalars: y/on keys are booleans, 017 is octal, yes is true",
		"kind: Pod\ndata: {y: a, on: b, o: 017, h: 0x1F, s: yes, t: 190:20:30}\n",
		`{"ok":[{"data":{"h":31,"o":15,"s":true,"t":"190:20:30","true":"b"},"kind":"Pod"}]}`},
	{"a trailing --- makes an empty piece: the whole text is refused",
		"kind: VirtualMachineClone\n---\n",
		`{"error":"EOF"}`},
	{"a comment-only piece is a null object, not an error",
		"# nothing here\n---\nkind: Pod\n",
		`{"ok":[null,{"kind":"Pod"}]}`},
	{"a %YAML 1.2 directive is refused by yaml.v2",
		"%YAML 1.2\n---\nkind: Pod\n",
		`{"error":"error converting YAML to JSON: yaml: found incompatible YAML document"}`},
	{"a quoted \"<<\" is a plain key, not a merge",
		"\"<<\": {kind: Pod}\nkind: ConfigMap\n",
		`{"ok":[{"<<":{"kind":"Pod"},"kind":"ConfigMap"}]}`},
	{"status is dropped; 1.0 becomes the integer 1",
		"kind: Pod\nstatus: {phase: Running}\nspec: {x: 1.0}\n",
		`{"ok":[{"kind":"Pod","spec":{"x":1}}]}`},
	{"no kind: refused",
		"apiVersion: v1\n",
		`{"error":"error unmarshaling JSON: while decoding JSON: Object 'Kind' is missing in '{\"apiVersion\":\"v1\"}'"}`},
}

var jsonExamples = []struct {
	name, in, want string
}{
	{"duplicate argument keys: the last wins; big integers become float64",
		`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"resources_create_or_update","arguments":{"resource":"kind: ConfigMap","resource":"kind: VirtualMachineClone","n":12345678901234567890}}}`,
		`{"ok":{"id":7,"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"n":12345678901234567000,"resource":"kind: VirtualMachineClone"},"name":"resources_create_or_update"}}}`},
	{"field names are case-sensitive; duplicate params: the last wins; trailing bytes ignored",
		`{"jsonrpc":"2.0","id":1.9,"method":"tools/call","params":{"name":"pods_list"},"params":{"Name":"x","name":"vm_clone","Arguments":{"a":1}}} trailing`,
		`{"ok":{"id":1,"jsonrpc":"2.0","method":"tools/call","params":{"arguments":null,"name":"vm_clone"}}}`},
	{"id null is a notification; batches are read element by element",
		`[{"jsonrpc":"2.0","id":null,"method":"notifications/initialized"},{"jsonrpc":"2.0","id":"x","method":"ping"}]`,
		`{"ok":[{"jsonrpc":"2.0","method":"notifications/initialized"},{"id":"x","jsonrpc":"2.0","method":"ping"}]}`},
	{"arguments that are not an object are refused",
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":["resource"]}}`,
		`{"error":"failed to unmarshal tool call arguments: json: cannot unmarshal array into Go value of type map[string]interface {} for tool x"}`},
}

func TestManifestExamples(t *testing.T) {
	for _, ex := range manifestExamples {
		if got := encode(t, manifestResult(ex.in)); got != ex.want {
			t.Errorf("%s\n in:   %q\n got:  %s\n want: %s", ex.name, ex.in, got, ex.want)
		}
	}
}

func TestJSONExamples(t *testing.T) {
	for _, ex := range jsonExamples {
		if got := encode(t, jsonResult([]byte(ex.in))); got != ex.want {
			t.Errorf("%s\n in:   %s\n got:  %s\n want: %s", ex.name, ex.in, got, ex.want)
		}
	}
}

// The whole point is to run the server's library versions: fail loudly if
// go.mod drifts from what the kubernetes-mcp-server v0.0.67 binary links.
func TestPinnedVersions(t *testing.T) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		t.Skip("no build info")
	}
	got := map[string]string{}
	for _, m := range bi.Deps {
		got[m.Path] = m.Version
	}
	for path, want := range serverVersions {
		if got[path] != want {
			t.Errorf("%s: linked %q, kubernetes-mcp-server v0.0.67 links %q", path, got[path], want)
		}
	}
}

func TestBatch(t *testing.T) {
	in := strings.Join([]string{
		`{"mode":"manifest","input":"kind: A\nkind: B\n"}`,
		`{"mode":"json","input_base64":"eyJqc29ucnBjIjoiMi4wIiwiaWQiOjEsIm1ldGhvZCI6InBpbmcifQ=="}`,
		`{"mode":"yaml","input":""}`,
		``,
		`{"mode":"manifest","input":""}`,
	}, "\n")
	var out strings.Builder
	w := bufio.NewWriter(&out)
	if err := runBatch(bufio.NewReader(strings.NewReader(in)), w); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	want := `{"ok":[{"kind":"B"}]}
{"ok":{"id":1,"jsonrpc":"2.0","method":"ping"}}
{"oracle_error":"unknown mode \"yaml\" (want manifest or json)"}
{"error":"failed to create or update resources, missing argument resource"}
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestGenDeterministicAndVaried(t *testing.T) {
	ok := 0
	for i := uint64(0); i < 500; i++ {
		a, b := genCase(42, i), genCase(42, i)
		if a != b {
			t.Fatalf("case %d differs between runs", i)
		}
		if objs, err := readManifest(a); err == nil && len(objs) > 0 {
			ok++
		}
	}
	// Mostly readable texts (so the fields are compared, not just errors),
	// but not all (refusals must be exercised too).
	if ok < 250 || ok > 480 {
		t.Errorf("%d of 500 generated texts are accepted; want a mix", ok)
	}
	if genCase(42, 0) == genCase(43, 0) {
		t.Error("the seed does not change the output")
	}
}

func encode(t *testing.T, r result) string {
	t.Helper()
	b, err := r.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
