package ledger

// WindowSource is a commit's windows, read by index. A biller implements
// it over its own table of series, so that a commit of 70,000 windows
// needs no slice of [Window] values (some 14 MB) kept between commits.
type WindowSource interface {
	// Len is the number of windows in the commit.
	Len() int
	// Window returns window i, 0 <= i < Len(). The ledger may ask for an
	// index more than once during a commit: it must get the same window.
	Window(i int) Window
}

// Windows is a slice of windows as a [WindowSource].
type Windows []Window

// Len implements [WindowSource].
func (ws Windows) Len() int { return len(ws) }

// Window implements [WindowSource].
func (ws Windows) Window(i int) Window { return ws[i] }
