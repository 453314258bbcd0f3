// Command goverifier checks the ledger's signed checkpoints and Merkle proofs with Go's own
// golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog, so that our formats are shown to be
// the standard ones and not merely consistent with our own checker.
//
// Usage: goverifier FILE.json, where the file is
//
//	{"verifier_key": "name+hex8+base64",
//	 "checkpoint": "<signed checkpoint note>",
//	 "inclusion": {...} or [{...}, ...],   // the ledger's inclusion proof JSON
//	 "consistency": {...} or [{...}, ...]} // the ledger's consistency proof JSON
//
// Every field but verifier_key is optional. It prints "ok" and exits 0 when everything verifies,
// or prints the reason to stderr and exits 1.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusionProof struct {
	Kind       string   `json:"kind"`
	LeafIndex  int64    `json:"leaf_index"`
	TreeSize   int64    `json:"tree_size"`
	LeafData   []byte   `json:"leaf_data"` // encoding/json decodes base64 into []byte
	AuditPath  [][]byte `json:"audit_path"`
	Checkpoint string   `json:"checkpoint"`
}

type consistencyProof struct {
	Kind          string   `json:"kind"`
	OldSize       int64    `json:"old_size"`
	NewSize       int64    `json:"new_size"`
	Proof         [][]byte `json:"proof"`
	OldCheckpoint string   `json:"old_checkpoint"`
	NewCheckpoint string   `json:"new_checkpoint"`
}

type input struct {
	VerifierKey string          `json:"verifier_key"`
	Checkpoint  string          `json:"checkpoint"`
	Inclusion   json.RawMessage `json:"inclusion"`
	Consistency json.RawMessage `json:"consistency"`
}

// checkpoint is a C2SP tlog-checkpoint: origin, tree size, root hash.
type checkpoint struct {
	origin string
	tree   tlog.Tree
}

// parseCheckpoint parses the checkpoint text by hand. tlog.ParseTree cannot be used: it parses
// the go.sum database's older tree note, whose first line must be the literal
// "go.sum database tree", whereas a C2SP checkpoint's first line is the log's origin. The size and
// hash lines are the same, and are checked here exactly as tlog.ParseTree checks them (decimal
// without leading zeros, base64 of 32 bytes).
func parseCheckpoint(text string) (checkpoint, error) {
	if !strings.HasSuffix(text, "\n") {
		return checkpoint{}, errors.New("checkpoint text does not end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return checkpoint{}, errors.New("checkpoint has fewer than 3 lines")
	}
	for _, line := range lines {
		if line == "" {
			return checkpoint{}, errors.New("checkpoint has an empty line")
		}
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || lines[1] != strconv.FormatInt(n, 10) {
		return checkpoint{}, fmt.Errorf("malformed tree size %q", lines[1])
	}
	hash, err := tlog.ParseHash(lines[2])
	if err != nil {
		return checkpoint{}, fmt.Errorf("malformed root hash %q", lines[2])
	}
	return checkpoint{origin: lines[0], tree: tlog.Tree{N: n, Hash: hash}}, nil
}

func openCheckpoint(msg string, verifiers note.Verifiers) (checkpoint, error) {
	n, err := note.Open([]byte(msg), verifiers)
	if err != nil {
		return checkpoint{}, fmt.Errorf("note.Open: %w", err)
	}
	return parseCheckpoint(n.Text)
}

func hashes(raw [][]byte) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(raw))
	for i, h := range raw {
		if len(h) != tlog.HashSize {
			return nil, fmt.Errorf("proof hash %d is %d bytes", i, len(h))
		}
		copy(out[i][:], h)
	}
	return out, nil
}

// list decodes a JSON object or an array of objects.
func list[T any](raw json.RawMessage) ([]T, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if raw[0] == '[' {
		var items []T
		err := json.Unmarshal(raw, &items)
		return items, err
	}
	var item T
	if err := json.Unmarshal(raw, &item); err != nil {
		return nil, err
	}
	return []T{item}, nil
}

func checkInclusion(p inclusionProof, verifiers note.Verifiers) error {
	if p.Kind != "inclusion" {
		return fmt.Errorf("kind %q is not inclusion", p.Kind)
	}
	cp, err := openCheckpoint(p.Checkpoint, verifiers)
	if err != nil {
		return err
	}
	if cp.tree.N != p.TreeSize {
		return fmt.Errorf("proof size %d, checkpoint size %d", p.TreeSize, cp.tree.N)
	}
	path, err := hashes(p.AuditPath)
	if err != nil {
		return err
	}
	// tlog.RecordHash is SHA-256(0x00 || data), RFC 6962's leaf hash.
	err = tlog.CheckRecord(tlog.RecordProof(path), cp.tree.N, cp.tree.Hash, p.LeafIndex, tlog.RecordHash(p.LeafData))
	if err != nil {
		return fmt.Errorf("tlog.CheckRecord(leaf %d, size %d): %w", p.LeafIndex, p.TreeSize, err)
	}
	return nil
}

func checkConsistency(p consistencyProof, verifiers note.Verifiers) error {
	if p.Kind != "consistency" {
		return fmt.Errorf("kind %q is not consistency", p.Kind)
	}
	oldCP, err := openCheckpoint(p.OldCheckpoint, verifiers)
	if err != nil {
		return fmt.Errorf("old checkpoint: %w", err)
	}
	newCP, err := openCheckpoint(p.NewCheckpoint, verifiers)
	if err != nil {
		return fmt.Errorf("new checkpoint: %w", err)
	}
	if oldCP.origin != newCP.origin {
		return fmt.Errorf("origins differ: %q, %q", oldCP.origin, newCP.origin)
	}
	if oldCP.tree.N != p.OldSize || newCP.tree.N != p.NewSize {
		return fmt.Errorf("proof sizes %d, %d; checkpoint sizes %d, %d", p.OldSize, p.NewSize, oldCP.tree.N, newCP.tree.N)
	}
	path, err := hashes(p.Proof)
	if err != nil {
		return err
	}
	if oldCP.tree.N == 0 {
		// tlog.CheckTree requires an old size of at least 1; the empty tree is a prefix of any.
		if len(path) != 0 {
			return errors.New("proof from the empty tree is not empty")
		}
		return nil
	}
	err = tlog.CheckTree(tlog.TreeProof(path), newCP.tree.N, newCP.tree.Hash, oldCP.tree.N, oldCP.tree.Hash)
	if err != nil {
		return fmt.Errorf("tlog.CheckTree(%d -> %d): %w", p.OldSize, p.NewSize, err)
	}
	return nil
}

func run(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var in input
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	verifier, err := note.NewVerifier(in.VerifierKey)
	if err != nil {
		return fmt.Errorf("note.NewVerifier: %w", err)
	}
	verifiers := note.VerifierList(verifier)

	if in.Checkpoint != "" {
		if _, err := openCheckpoint(in.Checkpoint, verifiers); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
	}
	inclusions, err := list[inclusionProof](in.Inclusion)
	if err != nil {
		return fmt.Errorf("inclusion: %w", err)
	}
	for i, p := range inclusions {
		if err := checkInclusion(p, verifiers); err != nil {
			return fmt.Errorf("inclusion %d: %w", i, err)
		}
	}
	consistencies, err := list[consistencyProof](in.Consistency)
	if err != nil {
		return fmt.Errorf("consistency: %w", err)
	}
	for i, p := range consistencies {
		if err := checkConsistency(p, verifiers); err != nil {
			return fmt.Errorf("consistency %d: %w", i, err)
		}
	}
	fmt.Printf("ok: %d inclusion, %d consistency\n", len(inclusions), len(consistencies))
	return nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: goverifier FILE.json")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "refused:", err)
		os.Exit(1)
	}
}
