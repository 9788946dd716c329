package rootfs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/policy"
)

func TestAccountsAndEnv(t *testing.T) {
	p := &policy.Policy{Services: []policy.Service{
		{Name: "ollama", User: "ollama", UID: 1001, GID: 1001, Env: map[string]string{"OLLAMA_HOST": "127.0.0.1:11434", "LANG": "en_US.UTF-8"}},
		{Name: "agent", User: "agent", UID: 1000, GID: 1000},
		{Name: "ollama-pull", User: "ollama", UID: 1001, GID: 1001},
	}}
	users := Users(p)
	if len(users) != 2 || users[0].Home != "/run/home/ollama" {
		t.Fatalf("users %+v", users)
	}
	etc := t.TempDir()
	if err := WriteAccounts(etc, users, map[int][]string{1000: {"ollama"}}); err != nil {
		t.Fatal(err)
	}
	pw, _ := os.ReadFile(filepath.Join(etc, "passwd"))
	gr, _ := os.ReadFile(filepath.Join(etc, "group"))
	wantPW := "root:x:0:0:root:/root:/sbin/nologin\nollama:x:1001:1001:tdforge service:/run/home/ollama:/sbin/nologin\nagent:x:1000:1000:tdforge service:/run/home/agent:/sbin/nologin\n"
	wantGR := "root:x:0:\nagent:x:1000:ollama\nollama:x:1001:\n"
	if string(pw) != wantPW || string(gr) != wantGR {
		t.Fatalf("passwd:\n%s\ngroup:\n%s", pw, gr)
	}
	env := strings.Join(Env(p.Services[0]), "\n")
	want := "HOME=/run/home/ollama\nLANG=en_US.UTF-8\nOLLAMA_HOST=127.0.0.1:11434\nPATH=" + Path + "\nUSER=ollama"
	if env != want {
		t.Fatalf("env:\n%s\nwant:\n%s", env, want)
	}
	if env := Env(p.Services[1]); len(env) != 4 || env[1] != "LANG=C.UTF-8" {
		t.Fatalf("agent env %v", env)
	}
}

func TestMakeHomes(t *testing.T) {
	root := t.TempDir()
	u := User{Name: "svc", UID: os.Getuid(), GID: os.Getgid(), Home: filepath.Join(root, "home", "svc")}
	if os.Geteuid() == 0 {
		u.UID, u.GID = 1234, 1234
	}
	if err := MakeHomes([]User{u}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(u.Home)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("home %v %v", st, err)
	}
	if s := st.Sys().(*syscall.Stat_t); int(s.Uid) != u.UID || int(s.Gid) != u.GID {
		t.Fatalf("home owned by %d:%d, want %d:%d", s.Uid, s.Gid, u.UID, u.GID)
	}
}
