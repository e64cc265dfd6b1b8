/* SPDX-License-Identifier: MIT */
/* The per-architecture facts of GOT patching (arch/<name>.h): the only
 * place that asks which machine this is. */
#ifndef GILSHIM_REDIRECT_ARCH_H
#define GILSHIM_REDIRECT_ARCH_H
#include <elf.h>
#if defined(__x86_64__) && !defined(__ILP32__)
#include "arch/x86_64.h"
#elif defined(__aarch64__) && !defined(__ILP32__)
#include "arch/aarch64.h"
#else
#include "arch/none.h"
#endif
#endif
