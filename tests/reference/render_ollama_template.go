// Renders conversations through an Ollama Modelfile the way Ollama does, with Go's text/template:
//
//	go run render_ollama_template.go CASES.json
//
// CASES.json: [{"modelfile": PATH, "messages": [{"role", "content"}], "expected": TEXT}, ...].
// For each case: the Modelfile's TEMPLATE and SYSTEM values are read as Ollama's parser reads
// them (a value between """ and """ is taken as it is, across lines; runes that Go's
// strconv.IsPrint rejects are dropped outside the quotes' newlines and tabs, so such a rune is
// reported as an error), the Modelfile's SYSTEM becomes the first message when the conversation
// does not open with one (Ollama's chat handler), consecutive messages of one role are merged
// with "\n\n" (Ollama's collate), and the template is executed over {System, Messages}. The
// result must equal "expected" byte for byte. Prints a line per difference and a count; exit 1
// on any difference.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/template"
)

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type testCase struct {
	Modelfile string    `json:"modelfile"`
	Messages  []message `json:"messages"`
	Expected  string    `json:"expected"`
}

// value of a Modelfile command (TEMPLATE, SYSTEM) written between triple quotes
func tripleValue(text, command string) (string, bool, error) {
	for _, key := range []string{"\n" + command + " ", "\n" + strings.ToLower(command) + " "} {
		at := strings.Index("\n"+text, key)
		if at < 0 {
			continue
		}
		rest := strings.TrimLeft(text[at+len(key)-1:], " \t")
		if !strings.HasPrefix(rest, `"""`) {
			return "", false, fmt.Errorf("%s is not between triple quotes", command)
		}
		end := strings.Index(rest[3:], `"""`)
		if end < 0 {
			return "", false, fmt.Errorf("%s: no closing triple quotes", command)
		}
		v := rest[3 : 3+end]
		for _, r := range v {
			if !strconv.IsPrint(r) && r != '\n' && r != '\r' && r != '\t' && r != ' ' {
				return "", false, fmt.Errorf("%s holds %U, which Ollama's parser drops", command, r)
			}
		}
		return v, true, nil
	}
	return "", false, nil
}

func render(mf string, msgs []message) (string, error) {
	raw, err := os.ReadFile(mf)
	if err != nil {
		return "", err
	}
	text := string(raw)
	tmpl, ok, err := tripleValue(text, "TEMPLATE")
	if err != nil || !ok {
		return "", fmt.Errorf("%s: no TEMPLATE (%v)", mf, err)
	}
	system, hasSystem, err := tripleValue(text, "SYSTEM")
	if err != nil {
		return "", err
	}
	if hasSystem && (len(msgs) == 0 || msgs[0].Role != "system") {
		msgs = append([]message{{Role: "system", Content: system}}, msgs...)
	}
	var systems []string
	var collated []*message
	for i := range msgs {
		m := msgs[i]
		if m.Role == "system" {
			systems = append(systems, m.Content)
		}
		if n := len(collated); n > 0 && collated[n-1].Role == m.Role {
			collated[n-1].Content += "\n\n" + m.Content
		} else {
			collated = append(collated, &m)
		}
	}
	t, err := template.New("").Parse(tmpl)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	err = t.Execute(&b, map[string]any{"System": strings.Join(systems, "\n\n"), "Messages": collated})
	return b.String(), err
}

func main() {
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	var cases []testCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	bad := 0
	for i, c := range cases {
		got, err := render(c.Modelfile, c.Messages)
		if err != nil {
			fmt.Printf("case %d (%s): %v\n", i, c.Modelfile, err)
			bad++
		} else if got != c.Expected {
			fmt.Printf("case %d (%s): Ollama renders %q\n  doppel trained on %q\n", i, c.Modelfile, got, c.Expected)
			bad++
		}
	}
	fmt.Printf("%d of %d conversations rendered by the Modelfiles' Go templates equal doppel's rendering\n",
		len(cases)-bad, len(cases))
	if bad > 0 || len(cases) == 0 {
		os.Exit(1)
	}
}
