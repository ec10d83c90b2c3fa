package platforms

import "time"

// WaitStep is the runbook step an adapter's wait runs in.
type WaitStep string

const (
	// WaitStop is Platform.Stop: the stop step, which also keeps the
	// evidence first (budgets.rollout, with budgets.capture).
	WaitStop WaitStep = "stop"
	// WaitRollback is Platform.Rollback and the fallbacks (SetArtifact,
	// ScaleToZero): the rollback and fallback steps (budgets.rollout).
	WaitRollback WaitStep = "rollback"
	// WaitDBDown is a reversible down migration (budgets.db_down, with
	// budgets.capture when the database step is the first write).
	WaitDBDown WaitStep = "db_down"
	// WaitRestore is a snapshot or point-in-time restore (budgets.restore,
	// with budgets.capture).
	WaitRestore WaitStep = "restore"
	// WaitSwitch is pointing the app at the restored data (budgets.switch).
	WaitSwitch WaitStep = "switch"
)

// Wait is the longest an adapter may wait inside one runbook step, as its
// configuration sets it (its own defaults filled in). A step's budget
// must cover it: a budget cut short ends the step before the adapter can
// end its wait with its own message ("did not finish rolling out within
// 30m: 2/3 pods ready"). Config validation checks every Wait against the
// step's budget.
type Wait struct {
	Step WaitStep
	D    time.Duration
	// What says how D is made up, each field by its full path with its
	// value: "services.web.swarm.timeout (5m0s)".
	What string
	// Lower is what to change instead of raising the budget: "lower
	// services.web.swarm.timeout".
	Lower string
}
