/* SPDX-License-Identifier: MIT */
/*
 * GOT patching, for Pythons whose executable carries libpython (Debian's
 * python3.11, conda, manylinux): the dynamic linker searches the executable
 * before any LD_PRELOAD library, so extension modules bind to its
 * PyGILState_* and never see ours. We rewrite their import slots instead.
 *
 * For every loaded object but libgilshim and the object that defines the
 * names, each JUMP_SLOT / GLOB_DAT relocation against one of the redirected
 * names gets our function's address; which relocation types those are is
 * the architecture's (arch.h: x86-64 and aarch64; any other builds without
 * a patcher, and says so at load instead of patching nothing). Objects
 * present at start are patched at load (gs_redirect_init, from the entry
 * layer's constructor), later ones after our dlopen returns.
 *
 * RELRO: a slot inside the pages glibc made read-only (relro.h: glibc's
 * rounding, with the run-time page size) is made writable for the store
 * and read-only again; any other slot is writable already and stored as is.
 */
#define _GNU_SOURCE
#include "redirect.h"
#include "arch.h"
#include "relro.h"

#include "../../registry/alloc.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The entry layer's table (gs_redirect_init): set once at load. */
static const struct gs_redirect_target *redirects;
static size_t nredirects;

static pthread_mutex_t g_patch_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int g_method = GS_REDIRECT_NONE;
static const void *g_definer;      /* load base of the object that defines them */
static const void *g_self;         /* load base of libgilshim */
static unsigned long long g_subs;  /* dlpi_subs at the last walk */
static size_t g_slots;             /* slots rewritten so far */

/* Objects already walked, by load base and program headers; forgotten
 * whenever anything has been unloaded, since a new object may reuse both. */
static struct seen_obj {
    ElfW(Addr) base;
    const ElfW(Phdr) *phdr;
} *g_seen;
static size_t g_nseen, g_capseen;
static int g_seen_short;  /* its growth failed, and was reported */

int gs_redirect_method(void) { return atomic_load(&g_method); }

static int already_seen(const struct dl_phdr_info *info)
{
    for (size_t i = 0; i < g_nseen; i++)
        if (g_seen[i].base == info->dlpi_addr && g_seen[i].phdr == info->dlpi_phdr)
            return 1;
    if (g_nseen == g_capseen) {
        size_t cap = g_capseen ? 2 * g_capseen : 64;
        struct seen_obj *n = gs_realloc("GOT patching list", g_seen, cap * sizeof *n);
        if (!n) {
            /* walk it again next time: patching is idempotent */
            if (!g_seen_short)
                gs_log(GS_LOG_WARN, "out of memory for the GOT patching list; loaded objects "
                       "are walked again at the next dlopen");
            g_seen_short = 1;
            return 0;
        }
        g_seen_short = 0;
        g_seen = n;
        g_capseen = cap;
    }
    g_seen[g_nseen].base = info->dlpi_addr;
    g_seen[g_nseen].phdr = info->dlpi_phdr;
    g_nseen++;
    return 0;
}

/* ld.so relocates most d_ptr values in place; the vDSO's are not. */
static ElfW(Addr) dyn_addr(ElfW(Addr) base, ElfW(Addr) p) { return p < base ? base + p : p; }

static void store(void **slot, void *value, struct relro_span ro)
{
    if (*slot == value)
        return;
    ElfW(Addr) a = (ElfW(Addr))slot;
    int in_relro = gs_relro_contains(ro, a);
    long pg = sysconf(_SC_PAGESIZE);
    void *page = (void *)(a & ~(ElfW(Addr))(pg - 1));
    if (in_relro && mprotect(page, (size_t)pg, PROT_READ | PROT_WRITE) != 0) {
        gs_log(GS_LOG_WARN, "cannot make a RELRO page writable; a call site stays stock");
        return;
    }
    /* An aligned pointer store, single-copy atomic on every architecture
     * with a patcher (x86-64, aarch64): a thread calling through the slot
     * meanwhile sees the old or the new target, both valid. Nothing is
     * published through the slot (what our functions read is published by
     * their own atomics, src/registry), so its order needs no more than
     * the release it has. */
    __atomic_store_n(slot, value, __ATOMIC_RELEASE);
    g_slots++;
    if (in_relro)
        mprotect(page, (size_t)pg, PROT_READ);
}

static void patch_relocs(ElfW(Addr) base, const ElfW(Rela) *rel, size_t n, const ElfW(Sym) *symtab,
                         const char *strtab, struct relro_span ro)
{
    for (size_t i = 0; i < n; i++) {
        unsigned long type = ELF64_R_TYPE(rel[i].r_info);
        if (type != GS_GOT_R_JUMP_SLOT && type != GS_GOT_R_GLOB_DAT)
            continue;
        const ElfW(Sym) *sym = &symtab[ELF64_R_SYM(rel[i].r_info)];
        if (sym->st_shndx != SHN_UNDEF)
            continue;  /* the object's own definition, not an import */
        const char *name = strtab + sym->st_name;
        if (name[0] != 'P' || name[1] != 'y')
            continue;
        for (size_t k = 0; k < nredirects; k++)
            if (!strcmp(name, redirects[k].name)) {
                store((void **)(base + rel[i].r_offset), redirects[k].to, ro);
                break;
            }
    }
}

static int patch_object(struct dl_phdr_info *info)
{
    if ((const void *)info->dlpi_addr == g_self || (const void *)info->dlpi_addr == g_definer)
        return 0;
    if (info->dlpi_name && strstr(info->dlpi_name, "linux-vdso"))
        return 0;
    if (already_seen(info))
        return 0;
    const ElfW(Dyn) *dyn = NULL;
    struct relro_span ro = {0, 0};
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
        else if (info->dlpi_phdr[i].p_type == PT_GNU_RELRO) {
            ro = gs_relro_span(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr,
                               info->dlpi_phdr[i].p_memsz, (size_t)sysconf(_SC_PAGESIZE));
        }
    }
    if (!dyn)
        return 0;
    ElfW(Addr) base = info->dlpi_addr, symtab = 0, strtab = 0, jmprel = 0, rela = 0;
    size_t pltrelsz = 0, relasz = 0;
    long pltrel = DT_RELA;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        switch (dyn->d_tag) {
        case DT_SYMTAB: symtab = dyn_addr(base, dyn->d_un.d_ptr); break;
        case DT_STRTAB: strtab = dyn_addr(base, dyn->d_un.d_ptr); break;
        case DT_JMPREL: jmprel = dyn_addr(base, dyn->d_un.d_ptr); break;
        case DT_PLTRELSZ: pltrelsz = dyn->d_un.d_val; break;
        case DT_PLTREL: pltrel = (long)dyn->d_un.d_val; break;
        case DT_RELA: rela = dyn_addr(base, dyn->d_un.d_ptr); break;
        case DT_RELASZ: relasz = dyn->d_un.d_val; break;
        default: break;
        }
    }
    if (!symtab || !strtab || pltrel != DT_RELA)
        return 0;
    if (jmprel)
        patch_relocs(base, (const ElfW(Rela) *)jmprel, pltrelsz / sizeof(ElfW(Rela)),
                     (const ElfW(Sym) *)symtab, (const char *)strtab, ro);
    if (rela)
        patch_relocs(base, (const ElfW(Rela) *)rela, relasz / sizeof(ElfW(Rela)),
                     (const ElfW(Sym) *)symtab, (const char *)strtab, ro);
    return 0;
}

static int walk(struct dl_phdr_info *info, size_t size, void *unused)
{
    (void)size;
    (void)unused;
    if (info->dlpi_subs != g_subs) {
        g_subs = info->dlpi_subs;
        g_nseen = 0;
    }
    return patch_object(info);
}

void gs_patch_loaded_objects(void)
{
    if (atomic_load(&g_method) != GS_REDIRECT_GOT)
        return;
    pthread_mutex_lock(&g_patch_lock);
    size_t before = g_slots;
    dl_iterate_phdr(walk, NULL);
    size_t now = g_slots;
    pthread_mutex_unlock(&g_patch_lock);
    if (now != before)
        gs_log(GS_LOG_DEBUG, "GOT patching: %zu call slot(s) redirected", now - before);
}

static int preloaded(const char *self_path)
{
    const char *pre = getenv("LD_PRELOAD");
    const char *base = strrchr(self_path, '/');
    base = base ? base + 1 : self_path;
    return pre && strstr(pre, base);
}

/*
 * At load: decide how calls reach us. Cheap and silent without Python: one
 * dlsym that fails. GILSHIM_PATCH=auto (default) patches only when we were
 * preloaded; an extension that links libgilshim explicitly changes nothing
 * but its own calls.
 */
void gs_redirect_init(const struct gs_redirect_target *targets, size_t n)
{
    redirects = targets;
    nredirects = n;
    void *theirs = dlsym(RTLD_DEFAULT, "PyGILState_Ensure");
    if (!theirs)
        return;
    Dl_info me, it;
    if (!dladdr((void *)gs_redirect_init, &me) || !dladdr(theirs, &it))
        return;
    if (it.dli_fbase == me.dli_fbase) {
        atomic_store(&g_method, GS_REDIRECT_INTERPOSE);
        return;
    }
    int mode = gs_config()->patch;
    if (mode == GS_PATCH_NEVER || (mode == GS_PATCH_AUTO && !preloaded(me.dli_fname))) {
        atomic_store(&g_method, GS_REDIRECT_EXPLICIT);
        return;
    }
    if (!GS_GOT_ARCH) {
        atomic_store(&g_method, GS_REDIRECT_EXPLICIT);
        gs_log(GS_LOG_WARN, "CPython's names are defined by %s, ahead of the shim, and this "
               "architecture has no GOT patcher: only extensions linked with libgilshim reach it",
               it.dli_fname);
        return;
    }
    g_definer = it.dli_fbase;
    g_self = me.dli_fbase;
    atomic_store(&g_method, GS_REDIRECT_GOT);
    gs_log(GS_LOG_DEBUG, "CPython's names are defined by %s, ahead of the shim: GOT patching (%s)",
           it.dli_fname, GS_GOT_ARCH);
    gs_patch_loaded_objects();
}

/*
 * dlopen: patch what it brought in. glibc resolves a bare name ("libx.so")
 * with the *caller's* RUNPATH and $ORIGIN, and takes the caller from the
 * return address; so a bare name is passed on as a tail call, leaving that
 * address the real caller's, and what it loads is patched at the next
 * dlopen with a path. Python loads extension modules by path.
 */
typedef void *(*dlopen_fn)(const char *, int);
static _Atomic(dlopen_fn) g_real_dlopen;

GS_EXPORT void *dlopen(const char *file, int mode)
{
    dlopen_fn real = atomic_load_explicit(&g_real_dlopen, memory_order_relaxed);
    if (__builtin_expect(!real, 0)) {
        real = (dlopen_fn)dlsym(RTLD_NEXT, "dlopen");
        atomic_store_explicit(&g_real_dlopen, real, memory_order_relaxed);
    }
    if (atomic_load_explicit(&g_method, memory_order_relaxed) != GS_REDIRECT_GOT || !file ||
        !strchr(file, '/'))
        return real(file, mode);  /* a sibling call: tests/check-exports.sh checks it */
    void *h = real(file, mode);
    if (h)
        gs_patch_loaded_objects();
    return h;
}
