package register

import (
	"crypto/sha512"
	"encoding/json"
	"testing"
)

func TestSpellings(t *testing.T) {
	for _, c := range []struct {
		r         Register
		name, key string
		rtmr      int
		ccmr      uint32
	}{
		{MRTD, "MRTD", "mrtd", -1, 0},
		{RTMR0, "RTMR0", "rtmr0", 0, 1},
		{RTMR1, "RTMR1", "rtmr1", 1, 2},
		{RTMR2, "RTMR2", "rtmr2", 2, 3},
		{RTMR3, "RTMR3", "rtmr3", 3, 4},
	} {
		if c.r.Name() != c.name || c.r.String() != c.name || c.r.Key() != c.key || c.r.RTMRIndex() != c.rtmr || c.r.CCMRIndex() != c.ccmr {
			t.Errorf("%d: %s %s %d %d, want %s %s %d %d", c.r, c.r.Name(), c.r.Key(), c.r.RTMRIndex(), c.r.CCMRIndex(), c.name, c.key, c.rtmr, c.ccmr)
		}
		for _, s := range []string{c.name, c.key} {
			if got, err := Parse(s); err != nil || got != c.r {
				t.Errorf("Parse(%q) = %v, %v", s, got, err)
			}
		}
		if got, err := FromCCMR(c.ccmr); err != nil || got != c.r {
			t.Errorf("FromCCMR(%d) = %v, %v", c.ccmr, got, err)
		}
		if c.rtmr >= 0 {
			if got, err := FromRTMR(c.rtmr); err != nil || got != c.r || !got.IsRTMR() {
				t.Errorf("FromRTMR(%d) = %v, %v", c.rtmr, got, err)
			}
		} else if c.r.IsRTMR() {
			t.Error("MRTD is not an RTMR")
		}
	}
	if _, err := FromRTMR(4); err == nil {
		t.Error("FromRTMR(4) accepted")
	}
	if _, err := FromCCMR(5); err == nil {
		t.Error("FromCCMR(5) accepted")
	}
	if _, err := Parse("rtmr4"); err == nil {
		t.Error(`Parse("rtmr4") accepted`)
	}
	var q Quote
	q[RTMR3][0] = 1
	if q[4][0] != 1 {
		t.Error("Quote is not indexed in quote order")
	}
}

func TestJSONUsesKeys(t *testing.T) {
	b, err := json.Marshal(map[Register][]Register{RTMR1: {MRTD, RTMR3}})
	if err != nil || string(b) != `{"rtmr1":["mrtd","rtmr3"]}` {
		t.Fatalf("%s %v", b, err)
	}
	var back map[Register][]Register
	if err := json.Unmarshal(b, &back); err != nil || back[RTMR1][1] != RTMR3 {
		t.Fatalf("%v %v", back, err)
	}
	if _, err := json.Marshal(Register(9)); err == nil {
		t.Error("invalid register marshalled")
	}
}

func TestExtend(t *testing.T) {
	a, b := sha512.Sum384([]byte("a")), sha512.Sum384([]byte("b"))
	var zero Value
	want := sha512.Sum384(append(append([]byte{}, zero[:]...), a[:]...))
	if Extend(zero, a) != want {
		t.Fatal("Extend is not SHA384(value || digest)")
	}
	if Replay(a, b) != Extend(Extend(zero, a), b) || Replay() != zero {
		t.Fatal("Replay differs from extending in order")
	}
}
