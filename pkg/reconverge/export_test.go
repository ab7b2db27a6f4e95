package reconverge

// For reconverge_test: the namespace rig and frame builder the package's
// own tests use.
var (
	WatchRig = watchRig
	Frame    = frame
)
