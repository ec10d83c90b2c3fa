package migrations

import (
	"regexp"
	"slices"
	"strings"
)

// ScanSQL returns the statements of a migration's SQL that lose data: DROP
// TABLE/SCHEMA/DATABASE/SEQUENCE/..., any DROP … CASCADE, ALTER TABLE …
// DROP [COLUMN] x or DROP/TRUNCATE PARTITION, TRUNCATE, DELETE, and UPDATE
// without WHERE. Strings, quoted identifiers, comments and dollar-quoted
// bodies are not matched. Each finding is the statement (or ALTER clause),
// whitespace-collapsed, e.g. "ALTER TABLE users DROP COLUMN email".
func ScanSQL(src string) []string {
	clean, masked := maskSQL(src)
	var out []string
	start := 0
	for i := 0; i <= len(masked); i++ {
		if i < len(masked) && masked[i] != ';' {
			continue
		}
		out = append(out, scanStatement(clean[start:i], masked[start:i])...)
		start = i + 1
	}
	return out
}

// maskSQL returns src with comments blanked (clean) and additionally with
// the insides of string literals, quoted identifiers and dollar-quoted
// bodies blanked (masked); both keep src's length and byte positions.
func maskSQL(src string) (clean, masked string) {
	c := []byte(src)
	m := []byte(src)
	blank := func(b []byte, from, to int) {
		for k := from; k < to && k < len(b); k++ {
			if b[k] != '\n' {
				b[k] = ' '
			}
		}
	}
	n := len(src)
	for i := 0; i < n; {
		switch {
		case strings.HasPrefix(src[i:], "--"):
			j := strings.IndexByte(src[i:], '\n')
			if j < 0 {
				j = n - i
			}
			blank(c, i, i+j)
			blank(m, i, i+j)
			i += j
		case strings.HasPrefix(src[i:], "/*"):
			j := strings.Index(src[i+2:], "*/")
			end := n
			if j >= 0 {
				end = i + 2 + j + 2
			}
			blank(c, i, end)
			blank(m, i, end)
			i = end
		case src[i] == '\'' || src[i] == '"' || src[i] == '`':
			q := src[i]
			j := i + 1
			for j < n {
				if src[j] == '\\' && q == '\'' {
					j += 2
					continue
				}
				if src[j] == q {
					if j+1 < n && src[j+1] == q { // doubled quote
						j += 2
						continue
					}
					break
				}
				j++
			}
			if q != '"' && q != '`' { // identifiers stay readable in masked
				blank(m, i+1, j)
			}
			i = j + 1
		case src[i] == '$':
			tag := dollarTagRe.FindString(src[i:])
			if tag == "" {
				i++
				continue
			}
			j := strings.Index(src[i+len(tag):], tag)
			end := n
			if j >= 0 {
				end = i + len(tag) + j + len(tag)
			}
			blank(m, i+len(tag), end-len(tag))
			i = end
		default:
			i++
		}
	}
	return string(c), string(m)
}

var (
	dollarTagRe = regexp.MustCompile(`^\$[A-Za-z_]*\$`)
	tokenRe     = regexp.MustCompile("[A-Za-z_][A-Za-z0-9_$]*|\"[^\"]*\"|`[^`]*`|\\S")
	spaceRe     = regexp.MustCompile(`\s+`)
)

type token struct {
	word       string // upper-cased
	start, end int
}

func tokens(masked string) []token {
	var ts []token
	for _, loc := range tokenRe.FindAllStringIndex(masked, -1) {
		ts = append(ts, token{strings.ToUpper(masked[loc[0]:loc[1]]), loc[0], loc[1]})
	}
	return ts
}

// dropsData are the object kinds whose DROP loses data.
var dropsData = []string{"TABLE", "SCHEMA", "DATABASE", "SEQUENCE", "TABLESPACE", "OWNED", "COLUMN"}

// keptByDrop are ALTER TABLE … DROP targets that hold no data.
var keptByDrop = []string{"CONSTRAINT", "INDEX", "KEY", "PRIMARY", "FOREIGN", "CHECK", "DEFAULT", "NOT", "IDENTITY", "EXPRESSION", "TRIGGER", "SYSTEM", "PERIOD", "UNIQUE"}

func scanStatement(clean, masked string) []string {
	ts := tokens(masked)
	if len(ts) == 0 {
		return nil
	}
	show := func(from, to int) string {
		s := strings.TrimSpace(spaceRe.ReplaceAllString(clean[from:to], " "))
		if len(s) > 160 {
			s = s[:157] + "..."
		}
		return s
	}
	whole := show(ts[0].start, ts[len(ts)-1].end)
	has := func(w string) bool {
		return slices.ContainsFunc(ts, func(t token) bool { return t.word == w })
	}
	switch ts[0].word {
	case "DROP":
		if has("CASCADE") {
			return []string{whole}
		}
		if len(ts) > 1 && slices.Contains(dropsData, ts[1].word) {
			return []string{whole}
		}
		if len(ts) > 2 && ts[1].word == "TEMPORARY" && ts[2].word == "TABLE" {
			return nil
		}
		return nil
	case "TRUNCATE", "DELETE":
		return []string{whole}
	case "UPDATE":
		if !has("WHERE") {
			return []string{whole + " (no WHERE)"}
		}
		return nil
	case "WITH":
		if has("DELETE") || has("TRUNCATE") {
			return []string{whole}
		}
		if has("UPDATE") && !has("WHERE") {
			return []string{whole + " (no WHERE)"}
		}
		return nil
	case "ALTER":
		if len(ts) < 3 || ts[1].word != "TABLE" {
			return nil
		}
		return scanAlterTable(ts, show)
	}
	return nil
}

// scanAlterTable checks each comma-separated clause of ALTER TABLE.
func scanAlterTable(ts []token, show func(int, int) string) []string {
	i := 2
	for i < len(ts) && (ts[i].word == "IF" || ts[i].word == "EXISTS" || ts[i].word == "ONLY") {
		i++
	}
	if i >= len(ts) {
		return nil
	}
	nameStart := ts[i].start
	i++ // table name
	for i+1 < len(ts) && ts[i].word == "." {
		i += 2
	}
	if i < len(ts) && ts[i].word == "*" {
		i++
	}
	head := show(ts[0].start, ts[1].end) + " " + show(nameStart, ts[i-1].end)
	var out []string
	depth := 0
	clause := i
	for j := i; j <= len(ts); j++ {
		if j < len(ts) {
			switch ts[j].word {
			case "(":
				depth++
				continue
			case ")":
				depth--
				continue
			case ",":
				if depth > 0 {
					continue
				}
			default:
				continue
			}
		}
		if clause < j && clauseDrops(ts[clause:j]) {
			out = append(out, head+" "+show(ts[clause].start, ts[j-1].end))
		}
		clause = j + 1
	}
	return out
}

func clauseDrops(c []token) bool {
	if len(c) < 2 {
		return false
	}
	switch c[0].word {
	case "TRUNCATE":
		return true
	case "DROP":
		k := 1
		for k < len(c) && (c[k].word == "IF" || c[k].word == "EXISTS") {
			k++
		}
		if k >= len(c) {
			return false
		}
		if c[k].word == "COLUMN" || c[k].word == "PARTITION" {
			return true
		}
		if slices.Contains(keptByDrop, c[k].word) {
			return slices.ContainsFunc(c, func(t token) bool { return t.word == "CASCADE" })
		}
		return true // MySQL: DROP [COLUMN] is optional
	}
	return false
}

// ---- Python (Django) -------------------------------------------------

type djangoScan struct {
	destructive  []string // e.g. "RemoveField order.legacy_code"
	irreversible []string // e.g. "RunPython without reverse_code"
	downLoses    []string // what the reverse operations drop
}

var djangoOpRe = regexp.MustCompile(`\b(RemoveField|DeleteModel|RunSQL|RunPython|AddField|CreateModel|AlterField)\s*\(`)

func scanDjango(src string) djangoScan {
	var s djangoScan
	for _, loc := range djangoOpRe.FindAllStringSubmatchIndex(src, -1) {
		op := src[loc[2]:loc[3]]
		args, ok := pyCallArgs(src, loc[1]-1)
		if !ok {
			continue
		}
		pos, kw := pySplitArgs(args)
		arg := func(name string, i int) string {
			if v, ok := kw[name]; ok {
				return pyFirstString(v)
			}
			if i < len(pos) {
				return pyFirstString(pos[i])
			}
			return ""
		}
		switch op {
		case "RemoveField":
			s.destructive = append(s.destructive, "RemoveField "+arg("model_name", 0)+"."+arg("name", 1))
		case "DeleteModel":
			s.destructive = append(s.destructive, "DeleteModel "+arg("name", 0))
		case "RunSQL":
			sqlArg := kw["sql"]
			if sqlArg == "" && len(pos) > 0 {
				sqlArg = pos[0]
			}
			for _, f := range ScanSQL(strings.Join(pyStrings(sqlArg), ";\n")) {
				s.destructive = append(s.destructive, "RunSQL "+f)
			}
			rev, hasRev := kw["reverse_sql"]
			if !hasRev && len(pos) > 1 {
				rev, hasRev = pos[1], true
			}
			if !hasRev || strings.TrimSpace(rev) == "None" {
				s.irreversible = append(s.irreversible, "RunSQL without reverse_sql")
			} else {
				for _, f := range ScanSQL(strings.Join(pyStrings(rev), ";\n")) {
					s.downLoses = append(s.downLoses, "reverse_sql "+f)
				}
			}
		case "RunPython":
			_, hasRev := kw["reverse_code"]
			if !hasRev && len(pos) < 2 {
				s.irreversible = append(s.irreversible, "RunPython without reverse_code")
			}
		case "AddField":
			s.downLoses = append(s.downLoses, "removes field "+arg("model_name", 0)+"."+arg("name", 1))
		case "CreateModel":
			s.downLoses = append(s.downLoses, "deletes model "+arg("name", 0))
		}
	}
	return s
}

// pyCallArgs returns the text between the parenthesis at open and its match.
func pyCallArgs(src string, open int) (string, bool) {
	depth := 0
	for i := open; i < len(src); i++ {
		if q := pyStringAt(src, i); q > i {
			i = q - 1
			continue
		}
		switch src[i] {
		case '#':
			if j := strings.IndexByte(src[i:], '\n'); j >= 0 {
				i += j
			}
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
			if depth == 0 {
				return src[open+1 : i], true
			}
		}
	}
	return "", false
}

var pyKwRe = regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=[^=]`)

// pySplitArgs splits call arguments at top-level commas.
func pySplitArgs(args string) (pos []string, kw map[string]string) {
	kw = map[string]string{}
	depth, start := 0, 0
	add := func(a string) {
		if strings.TrimSpace(a) == "" {
			return
		}
		if m := pyKwRe.FindStringSubmatchIndex(a); m != nil {
			kw[a[m[2]:m[3]]] = a[m[1]-1:]
			return
		}
		pos = append(pos, a)
	}
	for i := 0; i < len(args); i++ {
		if q := pyStringAt(args, i); q > i {
			i = q - 1
			continue
		}
		switch args[i] {
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
		case ',':
			if depth == 0 {
				add(args[start:i])
				start = i + 1
			}
		}
	}
	add(args[start:])
	return pos, kw
}

// pyStringAt returns the index just past a string literal starting at i
// (with an optional r/b/u/f prefix), or i when none starts there.
func pyStringAt(s string, i int) int {
	j := i
	for j < len(s) && j-i < 2 && strings.IndexByte("rRbBuUfF", s[j]) >= 0 {
		j++
	}
	if j >= len(s) || (s[j] != '\'' && s[j] != '"') {
		return i
	}
	if j > i && i > 0 && isIdent(s[i-1]) {
		return i
	}
	q := s[j : j+1]
	if strings.HasPrefix(s[j:], q+q+q) {
		end := strings.Index(s[j+3:], q+q+q)
		if end < 0 {
			return len(s)
		}
		return j + 3 + end + 3
	}
	for k := j + 1; k < len(s); k++ {
		switch s[k] {
		case '\\':
			k++
		case q[0]:
			return k + 1
		case '\n':
			return k
		}
	}
	return len(s)
}

func isIdent(b byte) bool {
	return b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
}

// pyStrings returns the contents of every string literal in s.
func pyStrings(s string) []string {
	var out []string
	for i := 0; i < len(s); i++ {
		end := pyStringAt(s, i)
		if end == i {
			continue
		}
		lit := s[i:end]
		lit = strings.TrimLeft(lit, "rRbBuUfF")
		switch {
		case len(lit) >= 6 && (strings.HasPrefix(lit, `"""`) || strings.HasPrefix(lit, `'''`)):
			lit = lit[3 : len(lit)-3]
		case len(lit) >= 2:
			lit = lit[1 : len(lit)-1]
		}
		out = append(out, lit)
		i = end - 1
	}
	return out
}

func pyFirstString(s string) string {
	if ss := pyStrings(s); len(ss) > 0 {
		return ss[0]
	}
	return strings.TrimSpace(s)
}

// ---- Ruby (Rails) ----------------------------------------------------

type railsScan struct {
	destructive  []string
	irreversible string // why, when not reversible
	downLoses    []string
	how          string // how it is reversed: "def down", "def change"
}

var (
	rbDefRe        = regexp.MustCompile(`(?m)^\s*def\s+(up|down|change)\b`)
	rbDestructRe   = regexp.MustCompile(`(?m)^\s*(remove_column|remove_columns|drop_table|drop_join_table|remove_reference|remove_belongs_to|remove_timestamps|t\.remove|t\.remove_references)\b[ (]*([^\n]*)`)
	rbDataRe       = regexp.MustCompile(`\b[A-Z]\w*(?:\.\w+(?:\([^)\n]*\))?)*\.(delete_all|destroy_all|update_all)\b[^\n]*`)
	rbExecRe       = regexp.MustCompile(`(?m)\bexecute\s*\(?\s*(<<[~-]?['"]?(\w+)['"]?|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')`)
	rbAddRe        = regexp.MustCompile(`(?m)^\s*(add_column|create_table|add_reference|create_join_table)\b[ (]*([^\n]*)`)
	rbIrreversible = regexp.MustCompile(`ActiveRecord::IrreversibleMigration`)
	rbChangeIrrRe  = regexp.MustCompile(`(?m)^\s*(change_column|execute)\b`)
	rbBlockRe      = regexp.MustCompile(`\bdo\s*(\|[^|]*\|)?\s*$`)
)

// rbMethod returns the body of def name (to the next def or end of file).
func rbMethod(src, name string) (string, bool) {
	locs := rbDefRe.FindAllStringSubmatchIndex(src, -1)
	for k, l := range locs {
		if src[l[2]:l[3]] != name {
			continue
		}
		end := len(src)
		if k+1 < len(locs) {
			end = locs[k+1][0]
		}
		return src[l[1]:end], true
	}
	return "", false
}

func rbStripComments(src string) string {
	lines := strings.Split(src, "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			lines[i] = ""
		}
	}
	return strings.Join(lines, "\n")
}

// rbSQL returns the SQL of execute calls (string or heredoc).
func rbSQL(body string) []string {
	var out []string
	for _, m := range rbExecRe.FindAllStringSubmatchIndex(body, -1) {
		switch {
		case m[4] >= 0: // heredoc
			tag := body[m[4]:m[5]]
			rest := body[m[1]:]
			nl := strings.IndexByte(rest, '\n')
			if nl < 0 {
				continue
			}
			endRe := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(tag) + `\s*$`)
			loc := endRe.FindStringIndex(rest[nl:])
			if loc == nil {
				continue
			}
			out = append(out, rest[nl:nl+loc[0]])
		case m[6] >= 0:
			out = append(out, body[m[6]:m[7]])
		case m[8] >= 0:
			out = append(out, body[m[8]:m[9]])
		}
	}
	return out
}

func rbDestructive(body string) []string {
	var out []string
	for _, m := range rbDestructRe.FindAllStringSubmatch(body, -1) {
		out = append(out, strings.TrimSpace(m[1]+" "+strings.TrimRight(m[2], " )")))
	}
	for _, m := range rbDataRe.FindAllString(body, -1) {
		out = append(out, strings.TrimSpace(m))
	}
	for _, q := range rbSQL(body) {
		for _, f := range ScanSQL(q) {
			out = append(out, "execute "+f)
		}
	}
	return out
}

func scanRails(src string) railsScan {
	src = rbStripComments(src)
	var s railsScan
	up, hasUp := rbMethod(src, "up")
	down, hasDown := rbMethod(src, "down")
	change, hasChange := rbMethod(src, "change")
	switch {
	case hasUp:
		s.destructive = rbDestructive(up)
	case hasChange:
		s.destructive = rbDestructive(change)
	}
	switch {
	case hasDown:
		s.how = "def down"
		if rbIrreversible.MatchString(down) {
			s.irreversible = "def down raises ActiveRecord::IrreversibleMigration"
		}
		s.downLoses = rbDestructive(down)
	case hasChange:
		s.how = "def change"
		if rbIrreversible.MatchString(change) {
			s.irreversible = "raises ActiveRecord::IrreversibleMigration"
			break
		}
		if strings.Contains(change, "reversible do") || strings.Contains(change, "up_only") {
			s.how = "def change with reversible blocks"
		} else if m := rbChangeIrrRe.FindStringSubmatch(change); m != nil {
			s.irreversible = m[1] + " in def change cannot be reversed"
		}
		for _, m := range rbDestructRe.FindAllStringSubmatch(change, -1) {
			args := strings.Split(strings.TrimRight(m[2], " )"), ",")
			switch m[1] {
			case "remove_column":
				if len(args) < 3 {
					s.irreversible = "remove_column without a type in def change cannot be reversed"
				}
			case "drop_table":
				if !rbBlockRe.MatchString(m[2]) {
					s.irreversible = "drop_table without a block in def change cannot be reversed"
				}
			}
		}
		for _, m := range rbAddRe.FindAllStringSubmatch(change, -1) {
			args := strings.Split(strings.TrimSpace(m[2]), ",")
			what := strings.TrimSpace(strings.Split(args[0], " do")[0])
			if m[1] == "add_column" && len(args) > 1 {
				s.downLoses = append(s.downLoses, "removes column "+what+", "+strings.TrimSpace(args[1]))
			} else {
				s.downLoses = append(s.downLoses, "reverses "+m[1]+" "+what)
			}
		}
	case hasUp:
		s.irreversible = "def up without def down"
	default:
		s.irreversible = "no def change, up or down found"
	}
	return s
}
