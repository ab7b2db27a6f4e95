//go:build race

package agent_test

// raceEnabled: the race detector's shadow memory grows with every
// goroutine and allocation and is never given back, so RSS says nothing
// about the agent under -race.
const raceEnabled = true
