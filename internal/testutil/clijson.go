package testutil

import (
	"bytes"
	"encoding/json"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// UnmarshalCLIJSON reads a message esctl printed with -o json or jsonl
// into m, strictly (unknown fields are an error). esctl shows event and
// snapshot data that is a JSON object or array as JSON; it goes back to
// the base64 protojson wants for bytes first (compacted: -o json indents
// it with the rest).
func UnmarshalCLIJSON(b []byte, m proto.Message) error {
	raw, err := unembedData(b)
	if err != nil {
		return err
	}
	return protojson.Unmarshal(raw, m)
}

// unembedData turns every "data" member that is a JSON object or array
// into the base64 string of its compact text.
func unembedData(v json.RawMessage) (json.RawMessage, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || (v[0] != '{' && v[0] != '[') {
		return v, nil
	}
	if v[0] == '[' {
		var arr []json.RawMessage
		if err := json.Unmarshal(v, &arr); err != nil {
			return nil, err
		}
		for i := range arr {
			u, err := unembedData(arr[i])
			if err != nil {
				return nil, err
			}
			arr[i] = u
		}
		return json.Marshal(arr)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(v, &obj); err != nil {
		return nil, err
	}
	for k, mv := range obj {
		mv = bytes.TrimSpace(mv)
		if k == "data" && len(mv) > 0 && (mv[0] == '{' || mv[0] == '[') {
			var c bytes.Buffer
			if err := json.Compact(&c, mv); err != nil {
				return nil, err
			}
			b, err := json.Marshal(c.Bytes()) // base64
			if err != nil {
				return nil, err
			}
			obj[k] = b
			continue
		}
		u, err := unembedData(mv)
		if err != nil {
			return nil, err
		}
		obj[k] = u
	}
	return json.Marshal(obj)
}
