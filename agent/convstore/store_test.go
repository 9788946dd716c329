package convstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

var ctx = context.Background()

// alice is the owner the tests store conversations under.
var alice = Owner("alice-secret-0123456789abcdefghijklmnop")

func open(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCRUDAndGeneration(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	g0, err := s.Generation(ctx)
	if err != nil || g0 != 0 {
		t.Fatalf("fresh generation = %d, %v", g0, err)
	}
	c, g1, err := s.Create(ctx, alice, "", "tiny", nil)
	if err != nil || g1 != 1 || !ValidID(c.ID) {
		t.Fatalf("create: %+v gen %d err %v", c, g1, err)
	}
	g2, err := s.Append(ctx, alice, c.ID, "", Message{Role: "user", Content: "hello there\nsecond line"}, Message{Role: "assistant", Content: "hi"})
	if err != nil || g2 != 2 {
		t.Fatalf("append: gen %d err %v", g2, err)
	}
	got, err := s.Get(ctx, alice, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Title != "hello there" || got.Model != "tiny" || got.Summary.Messages != 2 || len(got.Messages) != 2 || got.Messages[1].Content != "hi" {
		t.Fatalf("get = %+v", got)
	}
	list, err := s.List(ctx, alice)
	if err != nil || len(list) != 1 || list[0].ID != c.ID {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if _, err := s.Append(ctx, alice, NewID(), "", Message{Role: "user", Content: "x"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("append to a missing conversation: %v", err)
	}
	if _, err := s.Append(ctx, alice, c.ID, "", Message{Role: "user", Content: strings.Repeat("a", MaxContent+1)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized message: %v", err)
	}
	if g, _ := s.Generation(ctx); g != 2 {
		t.Fatalf("failed writes changed the generation to %d", g)
	}
	g3, err := s.Delete(ctx, alice, c.ID)
	if err != nil || g3 != 3 {
		t.Fatalf("delete: gen %d err %v", g3, err)
	}
	if _, err := s.Get(ctx, alice, c.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := s.Delete(ctx, alice, c.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	// Reopening (an agent restart) keeps the generation.
	s.Close()
	s = open(t, dir)
	defer s.Close()
	if g, _ := s.Generation(ctx); g != 3 {
		t.Fatalf("generation after reopen = %d, want 3", g)
	}
}

// Another owner neither lists, reads, appends to nor deletes alice's
// conversation: each is ErrNotFound, as for an id that does not exist.
func TestOwnerIsolation(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	c, _, err := s.Create(ctx, alice, "mine", "", []Message{{Role: "user", Content: "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	bob := Owner("bob-secret-0123456789abcdefghijklmnopqrs")
	if list, err := s.List(ctx, bob); err != nil || len(list) != 0 {
		t.Fatalf("bob lists %+v, %v", list, err)
	}
	if _, err := s.Get(ctx, bob, c.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob gets alice's conversation: %v", err)
	}
	if _, err := s.Append(ctx, bob, c.ID, "", Message{Role: "user", Content: "x"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob appends to alice's conversation: %v", err)
	}
	if _, err := s.Delete(ctx, bob, c.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob deletes alice's conversation: %v", err)
	}
	if got, err := s.Get(ctx, alice, c.ID); err != nil || len(got.Messages) != 1 {
		t.Fatalf("alice's conversation after bob's tries: %+v, %v", got, err)
	}
	for _, o := range []string{"", "alice", strings.Repeat("A", 64)} {
		if _, err := s.List(ctx, o); !errors.Is(err, ErrInvalid) {
			t.Fatalf("list with owner %q: %v", o, err)
		}
	}
}

func TestMessageLimit(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	msgs := make([]Message, MaxMessages)
	for i := range msgs {
		msgs[i] = Message{Role: "user", Content: "m"}
	}
	c, _, err := s.Create(ctx, alice, "t", "", msgs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, alice, c.ID, "", Message{Role: "user", Content: "one more"}); !errors.Is(err, ErrFull) {
		t.Fatalf("append past the limit: %v", err)
	}
}

const childEnv = "CONVSTORE_KILL_CHILD_DIR"

// TestMain lets the kill test run this binary as a writer child.
func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		killChild(dir)
		return
	}
	os.Exit(m.Run())
}

// killChild appends messages forever, printing each one's number after
// Append returned (acknowledged), until it is killed.
func killChild(dir string) {
	s, err := Open(dir)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	c, _, err := s.Create(ctx, alice, "kill", "", nil)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("id", c.ID)
	for i := 0; i < MaxMessages; i++ {
		if _, err := s.Append(ctx, alice, c.ID, "", Message{Role: "user", Content: fmt.Sprintf("message %d %s", i, strings.Repeat("x", 4000))}); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("ack", i)
	}
	select {}
}

// TestKillDuringWrites kills a writing process with SIGKILL and checks
// that every write it acknowledged is in the reopened database.
func TestKillDuringWrites(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var id string
	acked := -1
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch f[0] {
		case "error":
			t.Fatal(sc.Text())
		case "id":
			id = f[1]
		case "ack":
			acked, _ = strconv.Atoi(f[1])
		}
		if acked >= 40 {
			break
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	// Lines printed before the kill took effect were acknowledged too.
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "ack" {
			acked, _ = strconv.Atoi(f[1])
		}
	}
	_ = cmd.Wait()
	if id == "" || acked < 40 {
		t.Fatalf("child acknowledged %d writes to %q", acked, id)
	}
	s := open(t, dir)
	defer s.Close()
	c, err := s.Get(ctx, alice, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Messages) < acked+1 {
		t.Fatalf("%d acknowledged messages, %d after reopening", acked+1, len(c.Messages))
	}
	for i := 0; i <= acked; i++ {
		if !strings.HasPrefix(c.Messages[i].Content, fmt.Sprintf("message %d ", i)) {
			t.Fatalf("message %d = %.20q", i, c.Messages[i].Content)
		}
	}
	if g, _ := s.Generation(ctx); g < uint64(acked)+2 {
		t.Fatalf("generation %d after %d acknowledged writes", g, acked+2)
	}
}

// The conversation limit is per owner: one client at its limit does not
// stop another from saving. Before, the count covered every owner.
func TestConversationLimitPerOwner(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	for i := range MaxConversations {
		if _, _, err := s.Create(ctx, alice, fmt.Sprint(i), "", nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Create(ctx, alice, "one more", "", nil); !errors.Is(err, ErrFull) {
		t.Fatalf("create past the owner's limit: %v", err)
	}
	bob := Owner("bob-secret-0123456789abcdefghijklmnopqrs")
	if _, _, err := s.Create(ctx, bob, "mine", "", nil); err != nil {
		t.Fatalf("another owner blocked by alice's conversations: %v", err)
	}
}

// Append extends the running hash the store keeps instead of re-reading
// the messages: content the host forged under an Append does not enter
// the digest, so the next Get and the next Open refuse it; untouched,
// appends reopen cleanly.
func TestAppendKeepsTrustedChain(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	c := mustCreate(t, s, "t", "one", "two")
	for i := range 5 {
		if _, err := s.Append(ctx, alice, c.ID, "m2", Message{Role: "assistant", Content: fmt.Sprint("answer ", i)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = open(t, dir)
	got, err := s.Get(ctx, alice, c.ID)
	if err != nil || len(got.Messages) != 7 || got.Messages[6].Content != "answer 4" || got.Model != "m2" {
		t.Fatalf("after appends and a reopen: %+v, %v", got, err)
	}
	raw := rawDB(t, dir)
	defer raw.Close()
	rawExec(t, raw, "UPDATE messages SET content = 'forged' WHERE seq = 0")
	if _, err := s.Append(ctx, alice, c.ID, "", Message{Role: "user", Content: "more"}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(ctx, alice, c.ID)
	wantTampered(t, err, "messages do not match its digest")
	s.Close()
	_, err = Open(dir)
	wantTampered(t, err, "do not match its digest")
}

// The per-owner counts the store keeps follow creates and deletes, and
// Open rebuilds them.
func TestPerOwnerCount(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	bob := Owner("bob-secret-0123456789abcdefghijklmnopqrs")
	a := mustCreate(t, s, "a1")
	mustCreate(t, s, "a2")
	if _, _, err := s.Create(ctx, bob, "b", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, alice, a.ID); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{alice: 1, bob: 1}
	if !maps.Equal(s.perOwner, want) {
		t.Fatalf("per-owner counts %v, want %v", s.perOwner, want)
	}
	s.Close()
	s = open(t, dir)
	defer s.Close()
	if !maps.Equal(s.perOwner, want) {
		t.Fatalf("per-owner counts after reopen %v, want %v", s.perOwner, want)
	}
}
