/* SPDX-License-Identifier: MIT */
/* A stand-in for a C library with a worker thread of its own (an audio
 * or network library, a database's background job): ticker_run() starts
 * a thread, which calls cb(arg) n times, and waits for it. */
#ifndef TICKER_H
#define TICKER_H
int ticker_run(void (*cb)(void *), void *arg, int n);
#endif
