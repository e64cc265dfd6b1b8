/* SPDX-License-Identifier: MIT */
/* GOT patching on x86-64: the relocation types that fill an import slot
 * with a function's address (PLT slot, and address taken or -fno-plt). */
#define GS_GOT_ARCH "x86-64"
#define GS_GOT_R_JUMP_SLOT R_X86_64_JUMP_SLOT
#define GS_GOT_R_GLOB_DAT R_X86_64_GLOB_DAT
