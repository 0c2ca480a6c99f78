package main

// Witness cosignatures on the checkpoint (C2SP tlog-cosignature), checked with
// github.com/transparency-dev/formats: its note verifiers for Ed25519 cosignature/v1
// (type 0x04) and ML-DSA-44 (type 0x06, filippo.io/mldsa underneath: neither circl nor
// pcvhub's OpenSSL), and its witness policy (Tessera's, after Sigsum's policy format),
// whose Satisfied says whether the checkpoint carries its quorum.

import (
	"errors"
	"fmt"
	"os"
	"strings"

	f_note "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/formats/witness"
	"golang.org/x/mod/sumdb/note"
)

// stringList collects a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func checkWitnesses(raw []byte, log note.Verifier, vkeys []string, policyFile string) error {
	verifiers := []note.Verifier{log}
	for _, vkey := range vkeys {
		v, err := f_note.NewVerifierForCosignatureV1(vkey)
		if err != nil {
			return fmt.Errorf("witness vkey %.40s...: %w", vkey, err)
		}
		verifiers = append(verifiers, v)
	}
	// note.Open fails on a line of a known key that does not verify: a tampered
	// cosignature is an error here, not a missing one
	n, err := note.Open(raw, note.VerifierList(verifiers...))
	if err != nil {
		return fmt.Errorf("checkpoint with cosignatures: %w", err)
	}
	for _, v := range verifiers[1:] {
		found := false
		for _, sig := range n.Sigs {
			if sig.Name == v.Name() && sig.Hash == v.KeyHash() {
				found = true
				t, err := f_note.CoSigV1Timestamp(sig)
				if err != nil {
					return fmt.Errorf("cosignature of %s: %w", v.Name(), err)
				}
				fmt.Printf("ok cosignature of %s key %08x time %d (transparency-dev/formats)\n",
					v.Name(), v.KeyHash(), t.Unix())
			}
		}
		if !found {
			return fmt.Errorf("no cosignature of %s key %08x on the checkpoint", v.Name(), v.KeyHash())
		}
	}
	if policyFile == "" {
		return nil
	}
	text, err := os.ReadFile(policyFile)
	if err != nil {
		return err
	}
	group, err := witness.ParsePolicy(text)
	if err != nil {
		return fmt.Errorf("witness policy %s: %w", policyFile, err)
	}
	if !group.Satisfied(raw) {
		return errors.New("witness policy: the checkpoint does not carry its quorum of cosignatures")
	}
	fmt.Printf("ok witness policy satisfied (transparency-dev/formats/witness)\n")
	return nil
}
