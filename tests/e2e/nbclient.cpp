/* SPDX-License-Identifier: MIT */
// A nanobind extension that calls back from a std::thread it starts, with
// nanobind's own nb::gil_scoped_acquire (PyGILState_Ensure/Release)
// (tests/e2e/clients.py, nanobind-thread).
#include <nanobind/nanobind.h>

#include <thread>

namespace nb = nanobind;

static int call_on_new_thread(nb::object fn)
{
    int result = -1;
    {
        nb::gil_scoped_release nogil;
        std::thread th([&] {
            nb::gil_scoped_acquire gil;
            result = nb::cast<int>(fn());
        });
        th.join();
    }
    return result;
}

NB_MODULE(nbclient, m)
{
    m.def("call_on_new_thread", &call_on_new_thread);
}
