/* SPDX-License-Identifier: MIT */
/*
 * A library importing CPython's names, linked with full RELRO, with data
 * right after its GOT (tests/arm64/gotexe.c).
 */
int PyGILState_Check(void);
int PyGILState_Ensure(void);

int gotlib_data[4] = {1, 2, 3, 4};

/* address taken: a GLOB_DAT slot */
void *gotlib_check_address(void) { return (void *)&PyGILState_Check; }

/* called: a JUMP_SLOT slot (never called by the test: only patched) */
int gotlib_ensure(void) { return PyGILState_Ensure(); }

int gotlib_write(int v)
{
    gotlib_data[1] = v;
    return gotlib_data[1];
}
