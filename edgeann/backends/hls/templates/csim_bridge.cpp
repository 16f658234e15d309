// Batched C simulation of an hls4ml project: loops over the samples in C++, on several threads.
//
// Compiled by edgeann.backends.hls.csim together with the project's firmware/<top>.cpp. The project is
// described by macros on the command line (no text substitution in this file):
//   EDGEANN_TOP        the top function (the hls4ml project name)
//   EDGEANN_TOP_HEADER its header, e.g. "myproject.h"
//   EDGEANN_N_IN       number of input values per sample
//   EDGEANN_N_OUT      number of output values per sample
//   EDGEANN_IO_STREAM  1 for io_stream (hls::stream of nnet::array packs), 0 for io_parallel (arrays)
// The types come from the project's defines.h: input_t and result_t.

#include EDGEANN_TOP_HEADER

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

// nnet_helpers.h declares these for hls4ml's trace facility; hls4ml's own bridge defines them.
namespace nnet {
bool trace_enabled = false;
std::map<std::string, void *> *trace_outputs = nullptr;
size_t trace_type_size = sizeof(double);
} // namespace nnet

namespace {

#if EDGEANN_IO_STREAM
typedef typename input_t::value_type input_scalar_t;
typedef typename result_t::value_type result_scalar_t;
#else
typedef input_t input_scalar_t;
typedef result_t result_scalar_t;
#endif

// The integer code of a fixed-point value: its bits, sign-extended if the type is signed.
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N> int64_t code_of(ap_fixed_base<W, I, S, Q, O, N> v) {
    static_assert(W <= 64, "output wider than 64 bits");
    uint64_t bits = v.range(W - 1, 0).to_uint64();
    if (S && W < 64 && ((bits >> (W - 1)) & 1))
        bits |= ~uint64_t(0) << W;
    return static_cast<int64_t>(bits);
}

// One sample. The double -> input type conversion is ap_fixed's constructor: with AP_TRN, AP_SAT on the
// input type that is floor onto the grid, then saturate, as the graph's Input node does.
template <class Out> void run_one(const double *x, Out *y) {
#if EDGEANN_IO_STREAM
    hls::stream<input_t> in("edgeann_in");
    hls::stream<result_t> out("edgeann_out");
    for (int i = 0; i < EDGEANN_N_IN / int(input_t::size); i++) {
        input_t pack;
        for (int j = 0; j < int(input_t::size); j++)
            pack[j] = input_scalar_t(x[i * input_t::size + j]);
        in.write(pack);
    }
    EDGEANN_TOP(in, out);
    for (int i = 0; i < EDGEANN_N_OUT / int(result_t::size); i++) {
        result_t pack = out.read();
        for (int j = 0; j < int(result_t::size); j++) {
            if constexpr (std::is_same<Out, double>::value)
                y[i * result_t::size + j] = pack[j].to_double();
            else
                y[i * result_t::size + j] = code_of(pack[j]);
        }
    }
#else
    input_t in[EDGEANN_N_IN];
    result_t out[EDGEANN_N_OUT];
    for (int i = 0; i < EDGEANN_N_IN; i++)
        in[i] = input_t(x[i]);
    EDGEANN_TOP(in, out);
    for (int i = 0; i < EDGEANN_N_OUT; i++) {
        if constexpr (std::is_same<Out, double>::value)
            y[i] = out[i].to_double();
        else
            y[i] = code_of(out[i]);
    }
#endif
}

template <class Out> int run_batch(const double *x, Out *y, long n, int threads) {
    if (n < 0 || !x || !y)
        return -1;
    if (threads <= 0)
        threads = std::max(1u, std::thread::hardware_concurrency());
    auto work = [=](long begin, long end) {
        for (long s = begin; s < end; s++)
            run_one<Out>(x + s * EDGEANN_N_IN, y + s * EDGEANN_N_OUT);
    };
    if (n == 0)
        return 0;
    // The first sample alone: nnet_utils fills its lookup tables (sigmoid, tanh, softmax, ...) in function
    // statics on the first call, without synchronization.
    work(0, 1);
    const long min_chunk = 64; // below this a thread costs more than it saves
    long rest = n - 1;
    long n_threads = std::max(1L, std::min<long>(threads, (rest + min_chunk - 1) / min_chunk));
    if (n_threads == 1) {
        work(1, n);
        return 0;
    }
    std::vector<std::thread> pool;
    long chunk = (rest + n_threads - 1) / n_threads;
    for (long t = 0; t < n_threads; t++) {
        long begin = 1 + t * chunk, end = std::min(n, begin + chunk);
        if (begin < end)
            pool.emplace_back(work, begin, end);
    }
    for (auto &th : pool)
        th.join();
    return 0;
}

} // namespace

extern "C" {

// y[n * N_OUT] = firmware(x[n * N_IN]) as doubles (exact: outputs are at most 53 bits wide).
int edgeann_predict(const double *x, double *y, long n, int threads) { return run_batch<double>(x, y, n, threads); }

// The same, as the integer codes of the output type.
int edgeann_predict_codes(const double *x, int64_t *y, long n, int threads) { return run_batch<int64_t>(x, y, n, threads); }

// Per-layer outputs of a project written with trace hooks (hls4ml's nnet::save_layer_output), one sample
// at a time on this thread: out[k][s * sizes[k] + i] is value i of layer names[k] for sample s. The trace
// state is global: do not run edgeann_predict on the same library at the same time.
int edgeann_trace(const double *x, double *y, long n, int n_layers, const char **names, const long *sizes, double **out) {
    if (n < 0 || !x || !y || nnet::trace_outputs)
        return -1;
    nnet::trace_outputs = new std::map<std::string, void *>;
    nnet::trace_type_size = sizeof(double);
    std::vector<double *> buffers;
    for (int k = 0; k < n_layers; k++) {
        buffers.push_back(static_cast<double *>(std::calloc(sizes[k], sizeof(double))));
        (*nnet::trace_outputs)[names[k]] = buffers.back();
    }
    nnet::trace_enabled = true;
    for (long s = 0; s < n; s++) {
        run_one<double>(x + s * EDGEANN_N_IN, y + s * EDGEANN_N_OUT);
        for (int k = 0; k < n_layers; k++)
            std::memcpy(out[k] + s * sizes[k], buffers[k], sizes[k] * sizeof(double));
    }
    nnet::trace_enabled = false;
    for (double *b : buffers)
        std::free(b);
    delete nnet::trace_outputs;
    nnet::trace_outputs = nullptr;
    return 0;
}

// What this library was compiled for, to check against the project manifest.
int edgeann_n_in() { return EDGEANN_N_IN; }
int edgeann_n_out() { return EDGEANN_N_OUT; }
int edgeann_input_width() { return input_scalar_t::width; }
int edgeann_input_iwidth() { return input_scalar_t::iwidth; }
int edgeann_output_width() { return result_scalar_t::width; }
int edgeann_output_iwidth() { return result_scalar_t::iwidth; }
}
