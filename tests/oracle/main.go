// Command tollgate-oracle reads input the way kubernetes-mcp-server v0.0.67
// reads it, so tollgate's tests can compare tollgate's reading against the
// upstream server's. See README.md for the contract.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

const usage = `usage:
  tollgate-oracle read-manifest   < resource-text
  tollgate-oracle read-json       < json-rpc-body
  tollgate-oracle batch           < requests.ndjson
  tollgate-oracle gen --seed N --count M
  tollgate-oracle version`

// serverVersions are the modules on the server's read path, at the versions
// the kubernetes-mcp-server v0.0.67 release binary links (go version -m).
var serverVersions = map[string]string{
	"k8s.io/apimachinery":           "v0.37.0",
	"sigs.k8s.io/yaml":              "v1.6.0",
	"go.yaml.in/yaml/v2":            "v2.4.4",
	"sigs.k8s.io/json":              "v0.0.0-20250730193827-2d320260d730",
	"github.com/segmentio/encoding": "v0.5.4",
}

func main() {
	if len(os.Args) < 2 {
		fail(usage)
	}
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	defer out.Flush()
	switch os.Args[1] {
	case "read-manifest":
		in := readAll()
		writeLine(out, manifestResult(asJSONString(in)))
	case "read-json":
		writeLine(out, jsonResult(readAll()))
	case "batch":
		if err := runBatch(bufio.NewReaderSize(os.Stdin, 1<<16), out); err != nil {
			out.Flush()
			fail(err.Error())
		}
	case "gen":
		fs := flag.NewFlagSet("gen", flag.ExitOnError)
		seed := fs.Uint64("seed", 1, "generator seed")
		count := fs.Int("count", 100, "number of texts")
		_ = fs.Parse(os.Args[2:])
		for i := 0; i < *count; i++ {
			writeLine(out, genCase(*seed, uint64(i)))
		}
	case "version":
		mods := map[string]string{}
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, m := range bi.Deps {
				if _, ok := serverVersions[m.Path]; ok {
					mods[m.Path] = m.Version
				}
			}
		}
		writeLine(out, map[string]any{"models": "kubernetes-mcp-server v0.0.67", "go": runtime.Version(), "modules": mods})
	case "-h", "--help", "help":
		fmt.Println(usage)
	default:
		fail(usage)
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(2)
}

func readAll() []byte {
	b, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err.Error())
	}
	return b
}

// result is one answer line: exactly one of the fields is present.
// OracleError means the request to the oracle was bad, not the input.
type result struct {
	OK          any    `json:"ok,omitempty"`
	Error       string `json:"error,omitempty"`
	OracleError string `json:"oracle_error,omitempty"`
}

// MarshalJSON keeps `"ok": null` and `"ok": []` distinct from "no ok".
func (r result) MarshalJSON() ([]byte, error) {
	switch {
	case r.OracleError != "":
		return canonical(map[string]any{"oracle_error": r.OracleError})
	case r.Error != "":
		return canonical(map[string]any{"error": r.Error})
	default:
		return canonical(map[string]any{"ok": r.OK})
	}
}

func manifestResult(resource string) result {
	objs, err := readManifest(resource)
	if err != nil {
		return result{Error: errText(err)}
	}
	return result{OK: objs}
}

func jsonResult(body []byte) result {
	v, err := readJSONRPC(body)
	if err != nil {
		return result{Error: errText(err)}
	}
	return result{OK: v}
}

func errText(err error) string {
	if s := err.Error(); s != "" {
		return s
	}
	return "error"
}

// canonical is encoding/json with sorted object keys (Go sorts map keys by
// bytes) and no HTML escaping: the same bytes for the same value every time.
func canonical(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func writeLine(w *bufio.Writer, v any) {
	b, err := canonical(v)
	if err != nil {
		b, _ = canonical(map[string]any{"oracle_error": err.Error()})
	}
	w.Write(b)
	w.WriteByte('\n')
}

// batchRequest is one input line of `batch`. input_base64 carries bodies that
// are not valid UTF-8 (a JSON string cannot).
type batchRequest struct {
	Mode        string  `json:"mode"`
	Input       *string `json:"input"`
	InputBase64 *string `json:"input_base64"`
}

// runBatch answers one line per request line, in order. It flushes whenever
// no further input is already buffered, so a caller may either stream all
// requests first or go request-by-request without deadlocking.
func runBatch(in *bufio.Reader, out *bufio.Writer) error {
	for {
		line, err := in.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			writeLine(out, answer(line))
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if in.Buffered() == 0 {
			if err := out.Flush(); err != nil {
				return err
			}
		}
	}
}

func answer(line []byte) result {
	var req batchRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return result{OracleError: "bad request line: " + err.Error()}
	}
	var input []byte
	switch {
	case req.Input != nil && req.InputBase64 == nil:
		input = []byte(*req.Input)
	case req.InputBase64 != nil && req.Input == nil:
		b, err := base64.StdEncoding.DecodeString(*req.InputBase64)
		if err != nil {
			return result{OracleError: "bad input_base64: " + err.Error()}
		}
		input = b
	default:
		return result{OracleError: `give exactly one of "input" and "input_base64"`}
	}
	switch req.Mode {
	case "manifest":
		return manifestResult(asJSONString(input))
	case "json":
		return jsonResult(input)
	default:
		return result{OracleError: fmt.Sprintf("unknown mode %q (want manifest or json)", req.Mode)}
	}
}
