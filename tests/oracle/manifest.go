package main

// How kubernetes-mcp-server v0.0.67 turns the `resource` argument of
// resources_create_or_update into the objects it applies. The server's own
// code is not copied here; this file makes the same library calls, in the same
// order, with the same library versions (see go.mod and README.md), so that
// whatever those libraries do (yaml.v2 merge keys, Unicode line breaks, ...)
// happens here too.

import (
	"errors"
	"regexp"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// The server splits the text with this regular expression before any YAML is
// read: only a line that is exactly "---" (LF or CRLF on both sides) splits.
// Every other document marker is left to the YAML reader below, which decodes
// only the FIRST document of each piece: whatever follows "--- # c", "---  ",
// "..." and the like inside a piece is silently dropped.
var docSeparator = regexp.MustCompile(`\r?\n---\r?\n`)

// errMissingResource is what the tool handler answers before any parsing when
// the argument is absent or the empty string.
var errMissingResource = errors.New("failed to create or update resources, missing argument resource")

// readManifest returns the objects the server would hand to server-side apply,
// in order, or the error that makes it refuse the whole text. Nothing is
// applied when any piece fails to parse; apply-time failures (unknown kind,
// empty metadata.name) are per object and not modelled here.
func readManifest(resource string) ([]map[string]any, error) {
	if resource == "" {
		return nil, errMissingResource
	}
	var objs []map[string]any
	for _, piece := range docSeparator.Split(resource, -1) {
		var obj unstructured.Unstructured
		// One Decode per piece: an empty piece gives io.EOF ("EOF"), which the
		// server treats as an error like any other.
		if err := yaml.NewYAMLToJSONDecoder(strings.NewReader(piece)).Decode(&obj); err != nil {
			return nil, err
		}
		// The server drops status so an agent cannot write it.
		delete(obj.Object, "status")
		objs = append(objs, obj.Object)
	}
	return objs, nil
}

// asJSONString turns raw bytes into the Go string the server would hold after
// encoding/json decoded the argument: each byte that is not part of valid
// UTF-8 becomes U+FFFD. (Over JSON-RPC the text is always valid UTF-8; this only
// matters for raw bytes given to the read-manifest subcommand.)
func asJSONString(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.Write(b[:n])
		}
		b = b[n:]
	}
	return sb.String()
}
