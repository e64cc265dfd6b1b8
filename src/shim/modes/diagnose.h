/* SPDX-License-Identifier: MIT */
/*
 * GILSHIM_MODE=diagnose: the policy's decision, reported, and stock's
 * outcome kept. The engine reaches it only through the gs_mode_ops the
 * entry layer installs (docs/architecture.md).
 */
#ifndef GILSHIM_DIAGNOSE_H
#define GILSHIM_DIAGNOSE_H

#include "../policy/policy.h"

/* --- GILSHIM_MODE=diagnose (diagnose.c): stock outcome, reported --- */
GS_HIDDEN int gs_diagnose_ensure(const void *caller);
GS_HIDDEN void gs_diagnose_release(int oldstate, const void *caller);
/* An Ensure once the runtime finalizes (finalized: 1 after Py_FinalizeEx,
 * 2 with no initialized runtime and no history of one). */
GS_HIDDEN void gs_diagnose_late_ensure(const void *caller, int finalized);
/* in's exit hook runs; self_counted: callbacks of the ending thread in it. */
GS_HIDDEN void gs_diagnose_interp_ends(struct gs_interp *in, int self_counted);

/* The ops the entry layer installs for the engine (policy.h). */
GS_HIDDEN extern const struct gs_mode_ops gs_diagnose_ops;

#endif
