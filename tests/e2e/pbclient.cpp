/* SPDX-License-Identifier: MIT */
// A pybind11 3.x extension that calls back from a std::thread it starts
// (tests/e2e/clients.py, pybind11-*), and times what each way of entering
// the caller's interpreter from such a thread costs (tests/e2e/cycle.py).
//   call_on_new_thread(fn)      py::gil_scoped_acquire, pybind11's default
//   activate_on_new_thread(fn)  py::subinterpreter_scoped_activate, for the
//                               interpreter that called it
//   cycles(n)                   ns per enter+leave on one new thread, each way
#include <pybind11/pybind11.h>
#include <pybind11/subinterpreter.h>

#include <chrono>
#include <thread>

namespace py = pybind11;

static int call_on_new_thread(py::object fn)
{
    int result = -1;
    {
        py::gil_scoped_release nogil;
        std::thread th([&] {
            py::gil_scoped_acquire gil;
            result = fn().cast<int>();
        });
        th.join();
    }
    return result;
}

static int activate_on_new_thread(py::object fn)
{
    int result = -1;
    auto si = py::subinterpreter::current();  // not owned: the caller's
    {
        py::gil_scoped_release nogil;
        std::thread th([&] {
            py::subinterpreter_scoped_activate active(si);
            result = fn().cast<int>();
        });
        th.join();
    }
    return result;
}

// Time n enter+leave pairs with an empty body, after one untimed pair; 0 if
// a pair entered another interpreter than `want`.
template <class Enter>
static double ns_per_cycle(long n, PyInterpreterState *want, Enter enter)
{
    bool right = true;
    enter([&] { right = PyInterpreterState_Get() == want; });
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < n; i++)
        enter([] {});
    auto t1 = std::chrono::steady_clock::now();
    return right ? std::chrono::duration<double, std::nano>(t1 - t0).count() / n : 0.0;
}

static py::dict cycles(long n)
{
    auto si = py::subinterpreter::current();
    PyInterpreterState *want = PyInterpreterState_Get();
    double transient = 0, reuse = 0, gilstate = 0, acquire = 0;
    {
        py::gil_scoped_release nogil;
        std::thread th([&] {
            // a new PyThreadState each time (pybind11's default)
            transient = ns_per_cycle(n, want, [&](auto body) {
                py::subinterpreter_scoped_activate a(si);
                body();
            });
            {
                // one PyThreadState for the thread, swapped in and out
                py::subinterpreter_thread_state ts(si);
                reuse = ns_per_cycle(n, want, [&](auto body) {
                    py::subinterpreter_scoped_activate a(ts);
                    body();
                });
            }
            // what gilshim routes: the interpreter that created this thread
            gilstate = ns_per_cycle(n, want, [](auto body) {
                PyGILState_STATE g = PyGILState_Ensure();
                body();
                PyGILState_Release(g);
            });
            acquire = ns_per_cycle(n, want, [](auto body) {
                py::gil_scoped_acquire g;
                body();
            });
        });
        th.join();
    }
    py::dict d;
    d["subinterpreter_scoped_activate"] = transient;
    d["subinterpreter_scoped_activate_reuse"] = reuse;
    d["PyGILState"] = gilstate;
    d["gil_scoped_acquire"] = acquire;
    return d;
}

PYBIND11_MODULE(pbclient, m, py::multiple_interpreters::per_interpreter_gil())
{
    m.def("call_on_new_thread", &call_on_new_thread);
    m.def("activate_on_new_thread", &activate_on_new_thread);
    m.def("cycles", &cycles);
}
