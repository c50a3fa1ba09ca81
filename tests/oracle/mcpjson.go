package main

// How kubernetes-mcp-server v0.0.67 reads a JSON-RPC POST body. Two JSON
// decoders are involved, and they are not the same one:
//
//   - the MCP Go SDK (github.com/modelcontextprotocol/go-sdk v1.8.0) decodes the
//     envelope and the tools/call params with github.com/segmentio/encoding/json
//     through a stream Decoder with case-insensitive field matching switched
//     off. A stream Decoder reads ONE value: bytes after it are ignored.
//   - the server's tool adapter then decodes `arguments` (kept raw by the SDK)
//     with the standard library: json.Unmarshal into map[string]any, so
//     numbers are float64, the last of duplicate keys wins, invalid UTF-8
//     becomes U+FFFD, and trailing bytes are an error.
//
// The structs below mirror only the fields the SDK declares, with the same
// Go types, so segmentio makes the same choices it makes in the server.

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"

	sjson "github.com/segmentio/encoding/json"
)

// sdkUnmarshal decodes the way the SDK's internal json package does.
func sdkUnmarshal(data []byte, v any) error {
	dec := sjson.NewDecoder(bytes.NewReader(data))
	dec.DontMatchCaseInsensitiveStructFields()
	return dec.Decode(v)
}

// wireMessage has the field names and types of the SDK's jsonrpc2 decode form.
// Method is raw so that `"method": ""` and a missing method differ.
type wireMessage struct {
	VersionTag string             `json:"jsonrpc"`
	ID         any                `json:"id,omitempty"`
	Method     stdjson.RawMessage `json:"method"`
	Params     stdjson.RawMessage `json:"params,omitempty"`
	Result     stdjson.RawMessage `json:"result,omitempty"`
	Error      *wireError         `json:"error,omitempty"`
}

type wireError struct {
	Code    int64              `json:"code"`
	Message string             `json:"message"`
	Data    stdjson.RawMessage `json:"data,omitempty"`
}

// callToolParams has the fields of the SDK's CallToolParamsRaw. Arguments stay
// raw: the tool adapter decodes them itself.
type callToolParams struct {
	Meta           map[string]any                `json:"_meta,omitempty"`
	Name           string                        `json:"name"`
	Arguments      stdjson.RawMessage            `json:"arguments,omitempty"`
	InputResponses map[string]stdjson.RawMessage `json:"inputResponses,omitempty"`
	RequestState   string                        `json:"requestState,omitempty"`
}

// readJSONRPC returns the body as the server reads it: one message, or a list
// for a JSON array (a batch; the SDK refuses those for protocol 2025-06-18
// and later, which depends on a header and is not modelled).
func readJSONRPC(body []byte) (any, error) {
	if len(body) == 0 {
		return nil, errors.New("POST requires a non-empty body")
	}
	// Like the SDK: try an array first, then a single message.
	var batch []stdjson.RawMessage
	if err := sdkUnmarshal(body, &batch); err == nil {
		if len(batch) == 0 {
			return nil, errors.New("malformed payload: empty batch")
		}
		out := make([]any, 0, len(batch))
		for _, raw := range batch {
			m, err := readMessage(raw)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	}
	return readMessage(body)
}

func readMessage(data []byte) (map[string]any, error) {
	var w wireMessage
	if err := sdkUnmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("malformed payload: unmarshaling jsonrpc message: %w", err)
	}
	if w.VersionTag != "2.0" {
		return nil, fmt.Errorf("malformed payload: invalid message version tag %q; expected %q", w.VersionTag, "2.0")
	}
	out := map[string]any{"jsonrpc": w.VersionTag}
	// The SDK accepts a string, a number (truncated to int64) or null/absent
	// (a notification) as id; anything else is a parse error.
	switch id := w.ID.(type) {
	case nil:
	case float64:
		out["id"] = int64(id)
	case string:
		out["id"] = id
	default:
		return nil, fmt.Errorf("malformed payload: invalid ID type %T", id)
	}
	if len(w.Method) == 0 {
		// A response: it needs a valid id.
		if w.ID == nil {
			return nil, errors.New("malformed payload: JSON RPC invalid request")
		}
		if len(w.Result) > 0 {
			v, err := sdkGeneric(w.Result)
			if err != nil {
				return nil, err
			}
			out["result"] = v
		}
		if w.Error != nil {
			e := map[string]any{"code": w.Error.Code, "message": w.Error.Message}
			if len(w.Error.Data) > 0 {
				v, err := sdkGeneric(w.Error.Data)
				if err != nil {
					return nil, err
				}
				e["data"] = v
			}
			out["error"] = e
		}
		return out, nil
	}
	var method string
	if err := sdkUnmarshal(w.Method, &method); err != nil {
		return nil, fmt.Errorf("malformed payload: unmarshaling jsonrpc message: %w", err)
	}
	out["method"] = method
	if method != "tools/call" {
		// Other methods are decoded into typed structs by the SDK; this is only
		// a generic view of the same bytes.
		if len(w.Params) > 0 {
			v, err := sdkGeneric(w.Params)
			if err != nil {
				return nil, err
			}
			out["params"] = v
		}
		return out, nil
	}
	params, err := readCallToolParams(w.Params)
	if err != nil {
		return nil, err
	}
	out["params"] = params
	return out, nil
}

// readCallToolParams follows tools/call: SDK params decoding, then the
// server's own decoding of arguments.
func readCallToolParams(raw stdjson.RawMessage) (map[string]any, error) {
	var p *callToolParams
	if raw != nil {
		if err := sdkUnmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("invalid params: unmarshaling %q: %w", raw, err)
		}
	}
	if p == nil {
		return nil, errors.New(`invalid request: missing required "params"`)
	}
	out := map[string]any{"name": p.Name}
	if p.Meta != nil {
		out["_meta"] = p.Meta
	}
	var args map[string]any
	if len(p.Arguments) > 0 {
		if err := stdjson.Unmarshal(p.Arguments, &args); err != nil {
			return nil, fmt.Errorf("failed to unmarshal tool call arguments: %w for tool %s", err, p.Name)
		}
	}
	// nil (absent or null arguments) stays null: the handler then sees no
	// arguments at all.
	out["arguments"] = args
	return out, nil
}

// sdkGeneric is the SDK's decoder into an untyped value (float64 numbers).
func sdkGeneric(raw []byte) (any, error) {
	var v any
	if err := sdkUnmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("malformed payload: %w", err)
	}
	return v, nil
}
