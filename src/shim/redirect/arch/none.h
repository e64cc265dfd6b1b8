/* SPDX-License-Identifier: MIT */
/* An architecture without a GOT patcher: gotpatch.c never patches, and
 * says so in one line where it would have had to (gs_redirect_init). Adding
 * one is adding a header beside this one, and a line in arch.h, once its
 * relocation types are tested (make test-arm64 shows how). */
#define GS_GOT_ARCH ((const char *)0)
#define GS_GOT_R_JUMP_SLOT 0
#define GS_GOT_R_GLOB_DAT 0
