// The task loop of the CPU kernels of this folder (mmdistill/losses/fast/*_kernel.cpp).
#pragma once

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace mmdistill {

// fn(k) for k in [0, n_tasks) on n_threads threads. Built with OpenMP, the threads are those of
// the OpenMP runtime the process has loaded (torch's, whose libgomp has the same soname), so they
// do not compete with torch's threads that spin after its own parallel ops.
template <typename F>
void run_tasks(long n_tasks, int n_threads, F&& fn) {
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
  for (long k = 0; k < n_tasks; ++k) fn(k);
#else
  std::atomic<long> next{0};
  auto worker = [&]() {
    for (long k = next++; k < n_tasks; k = next++) fn(k);
  };
  int extra = std::max(0, std::min<int>(n_threads, static_cast<int>(n_tasks)) - 1);
  std::vector<std::thread> threads;
  threads.reserve(extra);
  for (int i = 0; i < extra; ++i) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
#endif
}

}  // namespace mmdistill
