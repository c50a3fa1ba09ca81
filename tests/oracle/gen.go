package main

// A structure-aware generator of `resource` texts aimed at the places where
// the server's reader (yaml.v2 behind sigs.k8s.io/yaml, after a regexp split)
// and a YAML 1.2 reader disagree. Each text starts from objects that look like
// what tollgate judges (VirtualMachineClone, plus ConfigMap/Pod/VirtualMachine
// so that kinds can be swapped) and then applies a few "tricks", each of which
// tries to make a security-relevant field (kind, apiVersion, namespace, name,
// spec.source.name) read differently depending on the reader.
//
// Case i of seed s depends only on (s, i): the generator is deterministic and
// the count does not change earlier cases.

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
)

// node is a YAML value about to be rendered.
type node struct {
	entries []entry // a mapping (in order; keys may repeat on purpose)
	items   []*node // a sequence
	isMap   bool
	isSeq   bool
	flow    bool   // render this collection as {...} / [...]
	anchor  string // "&a" is put before the value
	alias   string // the whole value is "*a"

	// Scalars: val is the intended string; text is how it is written
	// (quoted, tagged, escaped...). block holds the lines of a |/> scalar.
	val   string
	text  string
	block []string
}

type entry struct {
	key string // written as is (already quoted if it is to be)
	val *node
	raw string // a whole line written as is at this indentation instead
}

func (n *node) set(key string, v *node) { n.entries = append(n.entries, entry{key: key, val: v}) }

func (n *node) get(key string) *node {
	for _, e := range n.entries {
		if e.key == key && e.raw == "" {
			return e.val
		}
	}
	return nil
}

// insert puts e just before (or just after) the first entry with key, or at
// the end when there is none.
func (n *node) insert(key string, e entry, after bool) {
	for i, x := range n.entries {
		if x.key == key && x.raw == "" {
			if after {
				i++
			}
			n.entries = append(n.entries[:i], append([]entry{e}, n.entries[i:]...)...)
			return
		}
	}
	n.entries = append(n.entries, e)
}

func mapping() *node                    { return &node{isMap: true} }
func plain(s string) *node              { return &node{val: s, text: s} }
func aliasOf(name string) *node         { return &node{alias: "*" + name} }
func flowMap(k, v string) *node         { m := mapping(); m.flow = true; m.set(k, plain(v)); return m }
func (g *gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

type gen struct {
	r       *rand.Rand
	anchors int
}

func genCase(seed, i uint64) string {
	g := &gen{r: rand.New(rand.NewPCG(seed, i^0x9e3779b97f4a7c15))}
	return g.manifest()
}

func (g *gen) chance(p float64) bool { return g.r.Float64() < p }

func (g *gen) newAnchor() string {
	g.anchors++
	return fmt.Sprintf("a%d", g.anchors)
}

// ---- base objects -----------------------------------------------------------

var (
	kinds       = []string{"VirtualMachineClone", "VirtualMachineClone", "ConfigMap", "Pod", "VirtualMachine"}
	cloneAPIs   = []string{"clone.kubevirt.io/v1beta1", "clone.kubevirt.io/v1alpha1"}
	namespaces  = []string{"default", "tenant-a", "tenant-b", "kube-system", ""}
	vmNames     = []string{"vm-a", "vm-b", "prod-db", "web-1"}
	decoyValues = map[string][]string{
		"kind":         {"ConfigMap", "Pod", "VirtualMachineClone", "Secret", "VirtualMachine"},
		"apiVersion":   {"v1", "clone.kubevirt.io/v1beta1", "clone.kubevirt.io/v1alpha1", "kubevirt.io/v1"},
		"namespace":    {"default", "kube-system", "tenant-a", "tenant-b", ""},
		"name":         {"vm-a", "vm-b", "prod-db", "web-1", "evil"},
		"generateName": {"vm-a-clone-", "prod-db-clone-"},
	}
)

// object builds one base object and returns it with the mappings that tricks
// aim at, keyed by a dotted path.
func (g *gen) object() (*node, map[string]*node) {
	kind := g.pick(kinds...)
	root, meta := mapping(), mapping()
	at := map[string]*node{"": root, "metadata": meta}
	api := "v1"
	switch kind {
	case "VirtualMachineClone":
		api = g.pick(cloneAPIs...)
	case "VirtualMachine":
		api = "kubevirt.io/v1"
	}
	root.set("apiVersion", g.str(api))
	root.set("kind", g.str(kind))
	if g.chance(0.3) {
		meta.set("generateName", g.str(g.pick(vmNames...)+"-clone-"))
	} else {
		meta.set("name", g.str(g.pick(vmNames...)+"-clone"))
	}
	if ns := g.pick(namespaces...); ns != "" || g.chance(0.5) {
		meta.set("namespace", g.str(ns))
	}
	if g.chance(0.3) {
		labels := mapping()
		labels.set("app", g.str("tollgate"))
		meta.set("labels", labels)
		at["metadata.labels"] = labels
	}
	root.set("metadata", meta)
	switch kind {
	case "VirtualMachineClone":
		spec, src, dst := mapping(), mapping(), mapping()
		src.set("apiGroup", g.str("kubevirt.io"))
		src.set("kind", g.str("VirtualMachine"))
		src.set("name", g.str(g.pick(vmNames...)))
		dst.set("apiGroup", g.str("kubevirt.io"))
		dst.set("kind", g.str("VirtualMachine"))
		dst.set("name", g.str(g.pick(vmNames...)+"-copy"))
		spec.set("source", src)
		spec.set("target", dst)
		root.set("spec", spec)
		at["spec"], at["spec.source"], at["spec.target"] = spec, src, dst
	case "ConfigMap":
		data := mapping()
		data.set("key", g.str("value"))
		root.set("data", data)
		at["data"] = data
	case "Pod":
		spec, c := mapping(), mapping()
		c.set("name", g.str("main"))
		c.set("image", g.str("busybox"))
		spec.set("containers", &node{isSeq: true, items: []*node{c}})
		root.set("spec", spec)
		at["spec"] = spec
	case "VirtualMachine":
		spec := mapping()
		spec.set("runStrategy", g.str("Halted"))
		root.set("spec", spec)
		at["spec"] = spec
	}
	if g.chance(0.1) {
		root.set("status", flowMap("phase", "Succeeded"))
	}
	return root, at
}

// ---- scalars ----------------------------------------------------------------

// str writes the string s in a randomly chosen style that still means s to
// yaml.v2 (mostly; the escapes are where readers differ).
func (g *gen) str(s string) *node {
	n := plain(s)
	if s == "" {
		n.text = g.pick(`""`, `''`)
		return n
	}
	switch g.r.IntN(10) {
	case 0:
		n.text = "'" + strings.ReplaceAll(s, "'", "''") + "'"
	case 1:
		n.text = `"` + s + `"`
	case 2:
		n.text = g.escaped(s)
	case 3:
		n.text = g.pick("!!str ", "!<tag:yaml.org,2002:str> ") + s
	}
	return n
}

// escaped writes s double-quoted with one character as an escape sequence.
func (g *gen) escaped(s string) string {
	if s == "" {
		return `""`
	}
	i := g.r.IntN(len(s))
	c := s[i]
	esc := g.pick(`\x%02X`, `\u%04X`, `\U%08X`)
	return `"` + s[:i] + fmt.Sprintf(esc, c) + s[i+1:] + `"`
}

// tricky returns a scalar whose reading differs between YAML 1.1 and 1.2, or
// between readers: 1.1 booleans, octal/hex/sexagesimal numbers, null forms,
// tags, escapes of Unicode breaks and spaces, block and folded scalars.
func (g *gen) tricky(s string) *node {
	n := plain(s)
	switch g.r.IntN(12) {
	case 0:
		n.text = g.pick("yes", "no", "on", "off", "y", "n", "Y", "N", "YES", "Off", "True")
	case 1:
		n.text = g.pick("0x1F", "017", "0o17", "0b101", "1_000", "190:20:30", "1:30", "+12", "1e3", ".inf", "-.Inf", ".NaN", "0.", "08")
	case 2:
		n.text = g.pick("~", "null", "Null", "NULL", "", "!!null ''")
	case 3:
		n.text = "!!binary " + base64.StdEncoding.EncodeToString([]byte(s))
	case 4:
		n.text = g.pick("!custom ", "!!int ", "!!bool ", "!!float ", "!<!> ") + g.pick(s, `"`+s+`"`, "0x10", "yes")
	case 5:
		// Escapes of characters that are breaks or spaces to yaml.v2.
		n.text = `"` + s + g.pick(`\N`, `\_`, `\L`, `\P`, `\t`, `\0`, `\e`, `\/`) + `"`
	case 6:
		// A raw Unicode break or space inside a scalar.
		ch := g.pick("\u0085", "\u2028", "\u2029", "\u00a0", "\ufeff", "\u200b")
		q := g.pick("", `"`, "'")
		n.text = q + s[:len(s)/2] + ch + s[len(s)/2:] + q
	case 7:
		// Line folding: a quoted or plain scalar over two lines.
		n.text = g.pick(`"`+s[:len(s)/2]+"\\\n    "+s[len(s)/2:]+`"`, `"`+s[:len(s)/2]+"\n    "+s[len(s)/2:]+`"`, s[:len(s)/2]+"\n    "+s[len(s)/2:])
	case 8:
		n.block = []string{g.pick("|", "|-", "|+", ">", ">-", "|2-"), s}
	case 9:
		n.text = g.pick(`"`, "'") + g.pick(" ", "") + s + g.pick(" ", "\t", "") + g.pick(`"`, "'")
	case 10:
		n.text = s + g.pick(" # c", "\t# c", "#c", " #\u2028c")
	default:
		n.text = g.escaped(s)
	}
	return n
}

// ---- tricks -----------------------------------------------------------------

// targets are the (mapping, key) pairs whose value decides what is created
// where, and so what tollgate's policy looks at.
var targets = []struct{ at, key string }{
	{"", "kind"}, {"", "apiVersion"}, {"metadata", "namespace"}, {"metadata", "name"},
	{"metadata", "generateName"}, {"spec.source", "name"}, {"spec.source", "kind"},
	{"spec.target", "name"}, {"", "metadata"},
}

func (g *gen) decoy(key string) *node {
	if key == "metadata" {
		m := mapping()
		m.flow = g.chance(0.5)
		m.set("name", plain(g.pick(decoyValues["name"]...)))
		m.set("namespace", plain(g.pick("kube-system", "tenant-b")))
		return m
	}
	if vs, ok := decoyValues[key]; ok {
		return g.str(g.pick(vs...))
	}
	return g.str(g.pick(vmNames...))
}

func (g *gen) trick(root *node, at map[string]*node) {
	t := targets[g.r.IntN(len(targets))]
	m := at[t.at]
	if m == nil {
		m, t.at, t.key = root, "", "kind"
	}
	after := g.chance(0.5)
	switch g.r.IntN(8) {
	case 0, 1: // merge keys, the classic one
		g.merge(root, m, t.key, after)
	case 2: // a duplicate key
		m.insert(t.key, entry{key: g.keyText(t.key), val: g.decoy(t.key)}, after)
	case 3: // a comment that a Unicode break ends, making the rest live
		brk := g.pick("\u0085", "\u2028", "\u2029", "\u2028", "\u00a0", "\ufeff")
		line := "# note" + brk + "%s" + t.key + ": " + g.decoy(t.key).val
		if t.key == "metadata" {
			line = "# note" + brk + "%smetadata: {name: evil, namespace: kube-system}"
		}
		m.insert(t.key, entry{raw: line}, after)
	case 4: // the value itself written in a reader-dependent way
		if v := m.get(t.key); v != nil && !v.isMap {
			*v = *g.tricky(v.val)
		} else {
			m.insert(t.key, entry{key: t.key, val: g.tricky("x")}, after)
		}
	case 5: // key spellings: explicit "? key", quoted, escaped, long, with odd spaces
		m.insert(t.key, entry{key: g.keyText(t.key), val: g.decoy(t.key)}, after)
	case 6: // an alias to metadata.name, in a field that comes after it
		src := at["metadata"]
		if v := src.get("name"); v != nil && v.anchor == "" && !v.isMap && v.block == nil {
			name := g.newAnchor()
			v.anchor = "&" + name
			if t.at == "" || t.at == "metadata" {
				m, t.key = src, "namespace"
			}
			m.insert(t.key, entry{key: t.key, val: aliasOf(name)}, after)
		} else {
			g.merge(root, m, t.key, after)
		}
	case 7: // YAML 1.1 keys that are not strings to yaml.v2
		lbl := at["metadata.labels"]
		if lbl == nil {
			lbl = at["metadata"]
		}
		lbl.set(g.pick("on", "off", "yes", "no", "y", "n", "~", "null", "1", "0x10", "1.0", "true"), g.str("x"))
	}
}

// merge adds `<<: ...` that sets key to a decoy, before or after the explicit
// key: inline, through an anchor defined earlier, as a sequence of merges, or
// through a merge inside the anchored mapping.
func (g *gen) merge(root, m *node, key string, after bool) {
	src := mapping()
	src.flow = g.chance(0.7)
	src.set(key, g.decoy(key))
	var val *node
	switch g.r.IntN(4) {
	case 0:
		src.flow = true
		val = src
	case 1:
		val = aliasOf(g.define(root, src))
	case 2:
		other := mapping()
		other.flow = true
		other.set(key, g.decoy(key))
		a, b := g.define(root, src), g.define(root, other)
		val = &node{isSeq: true, flow: true, items: []*node{aliasOf(a), aliasOf(b)}}
	case 3:
		inner := g.define(root, src)
		outer := mapping()
		outer.flow = g.chance(0.5)
		outer.set("<<", aliasOf(inner))
		if g.chance(0.5) {
			outer.set(key, g.decoy(key))
		}
		val = aliasOf(g.define(root, outer))
	}
	k := "<<"
	if g.chance(0.1) {
		k = g.pick(`"<<"`, "'<<'", "!!merge <<", "<< ") // only some of these are merges
	}
	m.insert(key, entry{key: k, val: val}, after)
}

// define anchors v under a new top-level key placed after the earlier
// definitions and before everything else, so that every alias comes after its
// anchor in document order. Returns the anchor name.
func (g *gen) define(root, v *node) string {
	name := g.newAnchor()
	v.anchor = "&" + name
	i := 0
	for i < len(root.entries) && strings.HasPrefix(root.entries[i].key, "x-a") {
		i++
	}
	root.entries = append(root.entries[:i], append([]entry{{key: "x-" + name, val: v}}, root.entries[i:]...)...)
	return name
}

func (g *gen) keyText(k string) string {
	switch g.r.IntN(9) {
	case 0:
		return `"` + k + `"`
	case 1:
		return "'" + k + "'"
	case 2:
		return g.escaped(k)
	case 3:
		return "? " + k + "\n" // explicit key; the value line follows
	case 4:
		return k + g.pick("\u00a0", "\ufeff", "\u200b", " ") // a different key, or not
	case 5:
		return strings.Repeat("k", 1025+g.r.IntN(10)) // longer than the 1024 implicit-key limit
	case 6:
		return "!!str " + k
	case 7:
		return strings.ToUpper(k[:1]) + k[1:] // kind vs Kind: JSON field matching
	}
	return k
}

// ---- rendering --------------------------------------------------------------

type style struct {
	indent  int  // spaces per level
	seqIn   bool // indent "- " under its key
	json    bool // whole document as JSON
	newline string
}

func (g *gen) render(root *node, st style) string {
	var b strings.Builder
	if st.json {
		g.renderJSON(&b, root)
		b.WriteString("\n")
	} else if root.flow {
		g.renderFlow(&b, root)
		b.WriteString("\n")
	} else {
		g.renderBlock(&b, root, 0, st)
	}
	s := b.String()
	if st.newline != "\n" {
		s = strings.ReplaceAll(s, "\n", st.newline)
	}
	return s
}

func pad(n int) string { return strings.Repeat(" ", n) }

func (g *gen) renderBlock(b *strings.Builder, m *node, ind int, st style) {
	for _, e := range m.entries {
		if e.raw != "" {
			b.WriteString(pad(ind) + strings.ReplaceAll(e.raw, "%s", pad(ind)) + "\n")
			continue
		}
		key := e.key
		if strings.HasSuffix(key, "\n") { // explicit "? key": value goes on its own ":" line
			key = key + pad(ind)
		}
		b.WriteString(pad(ind) + key + ":")
		g.renderValue(b, e.val, ind, st)
	}
}

// renderValue writes what follows "key:" (a space and a scalar, or a newline
// and a nested block).
func (g *gen) renderValue(b *strings.Builder, v *node, ind int, st style) {
	prefix := ""
	if v.anchor != "" {
		prefix = " " + v.anchor
	}
	switch {
	case v.alias != "":
		b.WriteString(" " + v.alias + "\n")
	case v.block != nil:
		b.WriteString(prefix + " " + v.block[0] + "\n" + pad(ind+st.indent) + v.block[1] + "\n")
	case v.isMap && (v.flow || len(v.entries) == 0):
		b.WriteString(prefix + " ")
		g.renderFlow(b, v)
		b.WriteString("\n")
	case v.isMap:
		b.WriteString(prefix + "\n")
		g.renderBlock(b, v, ind+st.indent, st)
	case v.isSeq && v.flow:
		b.WriteString(prefix + " ")
		g.renderFlow(b, v)
		b.WriteString("\n")
	case v.isSeq:
		b.WriteString(prefix + "\n")
		si := ind
		if st.seqIn {
			si += st.indent
		}
		for _, it := range v.items {
			if it.isMap && !it.flow {
				// "- " then the mapping's entries, the first on the same line.
				var sub strings.Builder
				g.renderBlock(&sub, it, si+2, st)
				b.WriteString(pad(si) + "- " + strings.TrimPrefix(sub.String(), pad(si+2)))
			} else {
				var sub strings.Builder
				g.renderValue(&sub, it, si+2, st)
				b.WriteString(pad(si) + "-" + sub.String())
			}
		}
	default:
		if v.text == "" {
			b.WriteString(prefix + "\n")
		} else {
			b.WriteString(prefix + " " + v.text + "\n")
		}
	}
}

func (g *gen) renderFlow(b *strings.Builder, v *node) {
	switch {
	case v.alias != "":
		b.WriteString(v.alias)
	case v.isMap:
		b.WriteString("{")
		n := 0
		for _, e := range v.entries {
			if e.raw != "" {
				continue
			}
			if n > 0 {
				b.WriteString(", ")
			}
			n++
			key := strings.TrimSuffix(e.key, "\n")
			b.WriteString(key + ": ")
			if e.val.anchor != "" && (e.val.isMap || e.val.isSeq) {
				b.WriteString(e.val.anchor + " ")
			}
			g.renderFlow(b, e.val)
		}
		b.WriteString("}")
	case v.isSeq:
		b.WriteString("[")
		for i, it := range v.items {
			if i > 0 {
				b.WriteString(", ")
			}
			g.renderFlow(b, it)
		}
		b.WriteString("]")
	case v.block != nil || strings.ContainsAny(v.text, "\n,[]{}#") || v.text == "":
		b.WriteString(jsonQuote(v.val))
	default:
		if v.anchor != "" {
			b.WriteString(v.anchor + " ")
		}
		b.WriteString(v.text)
	}
}

// renderJSON writes the document as JSON, which the server also reads as
// YAML: duplicate keys stay in, "<<" becomes an ordinary quoted key (no merge
// in JSON), and an alias is written as the string "*a".
func (g *gen) renderJSON(b *strings.Builder, v *node) {
	switch {
	case v.isMap:
		b.WriteString("{")
		n := 0
		for _, e := range v.entries {
			if e.raw != "" {
				continue
			}
			if n > 0 {
				b.WriteString(g.pick(",", ", ", ",\n  "))
			}
			n++
			b.WriteString(jsonQuote(strings.Trim(e.key, "\"'? \n")) + ":" + g.pick("", " "))
			g.renderJSON(b, e.val)
		}
		b.WriteString("}")
	case v.isSeq:
		b.WriteString("[")
		for i, it := range v.items {
			if i > 0 {
				b.WriteString(",")
			}
			g.renderJSON(b, it)
		}
		b.WriteString("]")
	case v.alias != "":
		b.WriteString(jsonQuote(v.alias))
	default:
		s := jsonQuote(v.val)
		if g.chance(0.1) && len(v.val) > 0 {
			s = `"\u` + fmt.Sprintf("%04x", v.val[0]) + jsonQuote(v.val[1:])[1:]
		}
		b.WriteString(s)
	}
}

func jsonQuote(s string) string {
	b, _ := canonical(s)
	return string(b)
}

// ---- documents --------------------------------------------------------------

// separators between documents: the server's regexp splits only on a bare
// "---" line; the others are seen by its YAML reader, which reads only the
// first document of each piece.
var separators = []string{
	"\r\n---\r\n", "\n--- # next\n", "\n---   \n",
	"\n...\n---\n", "\n...\n", "\n---\n# only a comment\n---\n", "\n---\n\n---\n",
	"\n--- |\n", "\n----\n", "\n---\t\n", "\r\n---\n", "\n---\r\n", "\n # c\n---\n",
	"\n" + "\u2028" + "---\n", "\n---" + "\u0085",
}

func (g *gen) manifest() string {
	g.anchors = 0
	ndocs := 1 + g.r.IntN(3)
	var b strings.Builder
	switch g.r.IntN(12) {
	case 0:
		b.WriteString("---\n")
	case 1:
		b.WriteString("\ufeff")
	case 2:
		b.WriteString("# leading comment\n")
	case 3:
		b.WriteString(g.pick("%YAML 1.1\n---\n", "%YAML 1.2\n---\n", "--- # start\n"))
	}
	for d := 0; d < ndocs; d++ {
		if d > 0 {
			sep := "\n---\n"
			if g.chance(0.3) {
				sep = g.pick(separators...)
			}
			b.WriteString(strings.TrimPrefix(sep, "\n"))
		}
		b.WriteString(g.document())
	}
	switch g.r.IntN(20) {
	case 0:
		b.WriteString("---\n")
	case 1:
		b.WriteString("...\n")
	case 2:
		b.WriteString("# trailing comment\n")
	}
	return b.String()
}

// document is one object with 0-3 tricks, rendered in one style; sometimes a
// comment-only or empty document instead.
func (g *gen) document() string {
	if g.chance(0.04) {
		return g.pick("# just a comment\n", "\n", "", "   \n", "# c\u2028kind: ConfigMap\n")
	}
	root, at := g.object()
	for n := g.r.IntN(4); n > 0; n-- {
		g.trick(root, at)
	}
	st := style{indent: 2, newline: "\n"}
	switch g.r.IntN(10) {
	case 0:
		st.indent = 4
	case 1:
		st.indent = 1
	case 2:
		st.json = true
	case 3:
		root.flow = true
	}
	st.seqIn = g.chance(0.5)
	if g.chance(0.05) {
		st.newline = g.pick("\r\n", "\r")
	}
	out := g.render(root, st)
	if g.chance(0.03) {
		out = strings.Replace(out, "  ", "\t", 1) // a tab where YAML wants spaces
	}
	return out
}
