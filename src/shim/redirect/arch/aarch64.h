/* SPDX-License-Identifier: MIT */
/* GOT patching on aarch64: the same two kinds of slot as on x86-64. A
 * function pointer stored in data (R_AARCH64_ABS64, x86-64's R_X86_64_64)
 * is not an import slot and is left alone on both. */
#define GS_GOT_ARCH "aarch64"
#define GS_GOT_R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#define GS_GOT_R_GLOB_DAT R_AARCH64_GLOB_DAT
