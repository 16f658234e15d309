// edgeann's threshold layer for hls4ml: the exact elementwise requantization of edgeann.ir.Threshold.
//
// Registered with hls4ml through its extension API by edgeann/backends/hls/threshold.py, which writes the
// configuration struct (every type explicit, from the fixed-point graph) and the thresholds.
//
// For value i of channel c = i % n_chan (channels-last):
//   res[i] = start[c] + step[c] * #{k : data[i] >= thresholds[c * n_steps + k]}
// thresholds are on the input's grid (threshold_t has its fraction bits), start and step are output codes as
// values of the result's grid (start_t, step_t); the comparisons and the sum are exact ap_fixed arithmetic, and the
// result is representable in res_T by construction, so nothing rounds or saturates.
// Inputs and outputs: io_parallel arrays of n_in values, or io_stream streams of packs (hls4ml's nnet::array of
// data_T::size values, e.g. the channels of one pixel); value i is then element j of pack p, i = p * size + j.

#ifndef NNET_EDGEANN_THRESHOLD_H_
#define NNET_EDGEANN_THRESHOLD_H_

#include "hls_stream.h"
#include "nnet_common.h"

namespace nnet {

struct edgeann_threshold_config {
    static const unsigned n_in = 1;
    static const unsigned n_chan = 1;
    static const unsigned n_steps = 1;
    typedef ap_uint<1> count_t;
};

// One value of channel c: the count of thresholds it reaches, as an output code.
template <class out_T, class in_T, typename CONFIG_T>
out_T edgeann_threshold_value(in_T x, unsigned c,
                              typename CONFIG_T::threshold_t thresholds[CONFIG_T::n_chan * CONFIG_T::n_steps],
                              typename CONFIG_T::start_t start[CONFIG_T::n_chan],
                              typename CONFIG_T::step_t step[CONFIG_T::n_chan]) {
    #pragma HLS INLINE
    typename CONFIG_T::count_t count = 0;
    for (unsigned k = 0; k < CONFIG_T::n_steps; k++) {
        #pragma HLS UNROLL
        if (x >= thresholds[c * CONFIG_T::n_steps + k]) {
            count++;
        }
    }
    return start[c] + step[c] * count;
}

template <class data_T, class res_T, typename CONFIG_T>
void edgeann_threshold(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in],
                       typename CONFIG_T::threshold_t thresholds[CONFIG_T::n_chan * CONFIG_T::n_steps],
                       typename CONFIG_T::start_t start[CONFIG_T::n_chan],
                       typename CONFIG_T::step_t step[CONFIG_T::n_chan]) {
    #pragma HLS INLINE
    #pragma HLS ARRAY_PARTITION variable=thresholds complete
    #pragma HLS ARRAY_PARTITION variable=start complete
    #pragma HLS ARRAY_PARTITION variable=step complete
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        res[i] = edgeann_threshold_value<res_T, data_T, CONFIG_T>(data[i], i % CONFIG_T::n_chan, thresholds, start, step);
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void edgeann_threshold(hls::stream<data_T> &data, hls::stream<res_T> &res,
                       typename CONFIG_T::threshold_t thresholds[CONFIG_T::n_chan * CONFIG_T::n_steps],
                       typename CONFIG_T::start_t start[CONFIG_T::n_chan],
                       typename CONFIG_T::step_t step[CONFIG_T::n_chan]) {
    #pragma HLS ARRAY_PARTITION variable=thresholds complete
    #pragma HLS ARRAY_PARTITION variable=start complete
    #pragma HLS ARRAY_PARTITION variable=step complete
    for (unsigned p = 0; p < CONFIG_T::n_in / data_T::size; p++) {
        #pragma HLS PIPELINE
        data_T in = data.read();
        res_T out;
        PRAGMA_DATA_PACK(out)
        for (unsigned j = 0; j < data_T::size; j++) {
            #pragma HLS UNROLL
            out[j] = edgeann_threshold_value<typename res_T::value_type, typename data_T::value_type, CONFIG_T>(
                in[j], (p * data_T::size + j) % CONFIG_T::n_chan, thresholds, start, step);
        }
        res.write(out);
    }
}

// The same function as a line and a few corrections (edgeann.ir.Threshold with an affine form), for value i of
// channel c:
//   f = floor(data[i] * multiplier[c] + offset[c])         (exact product and sum, floor by assignment: AP_TRN)
//   code = clip(f, low[c], high[c]) + step[c] * sum_e ([data[i] >= exact[c][e]] - [data[i] >= line[c][e]])
//   res[i] = code * unit
// multiplier and offset hold M 2^(f_in - s) and B 2^-s, so f is floor((M x + B) / 2^s) of the input's code x; the
// corrections add the steps where the original's float arithmetic moved a threshold off the line.
struct edgeann_affine_requant_config {
    static const unsigned n_in = 1;
    static const unsigned n_chan = 1;
    static const unsigned n_corrections = 0;
};

#define EDGEANN_AFFINE_ARGS                                                                                     \
    typename CONFIG_T::multiplier_t multiplier[CONFIG_T::n_chan], typename CONFIG_T::offset_t offset[CONFIG_T::n_chan], \
        typename CONFIG_T::code_t low[CONFIG_T::n_chan], typename CONFIG_T::code_t high[CONFIG_T::n_chan],             \
        typename CONFIG_T::step_t step[CONFIG_T::n_chan],                                                               \
        typename CONFIG_T::threshold_t exact[CONFIG_T::n_chan * CONFIG_T::n_corrections + 1],                           \
        typename CONFIG_T::threshold_t line[CONFIG_T::n_chan * CONFIG_T::n_corrections + 1], typename CONFIG_T::unit_t unit[1]

// One value of channel c: the line's floor, clipped, plus the corrections, as an output code.
template <class out_T, class in_T, typename CONFIG_T>
out_T edgeann_affine_value(in_T x, unsigned c, EDGEANN_AFFINE_ARGS) {
    #pragma HLS INLINE
    typename CONFIG_T::floor_t f = x * multiplier[c] + offset[c];
    if (f < low[c]) {
        f = low[c];
    }
    if (f > high[c]) {
        f = high[c];
    }
    typename CONFIG_T::code_t code = f;
    for (unsigned e = 0; e < CONFIG_T::n_corrections; e++) {
        #pragma HLS UNROLL
        const unsigned k = c * CONFIG_T::n_corrections + e;
        if (x >= exact[k]) {
            code += step[c];
        }
        if (x >= line[k]) {
            code -= step[c];
        }
    }
    return code * unit[0];
}

template <class data_T, class res_T, typename CONFIG_T>
void edgeann_affine_requant(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in], EDGEANN_AFFINE_ARGS) {
    #pragma HLS INLINE
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        res[i] = edgeann_affine_value<res_T, data_T, CONFIG_T>(data[i], i % CONFIG_T::n_chan, multiplier, offset, low,
                                                               high, step, exact, line, unit);
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void edgeann_affine_requant(hls::stream<data_T> &data, hls::stream<res_T> &res, EDGEANN_AFFINE_ARGS) {
    for (unsigned p = 0; p < CONFIG_T::n_in / data_T::size; p++) {
        #pragma HLS PIPELINE
        data_T in = data.read();
        res_T out;
        PRAGMA_DATA_PACK(out)
        for (unsigned j = 0; j < data_T::size; j++) {
            #pragma HLS UNROLL
            out[j] = edgeann_affine_value<typename res_T::value_type, typename data_T::value_type, CONFIG_T>(
                in[j], (p * data_T::size + j) % CONFIG_T::n_chan, multiplier, offset, low, high, step, exact, line, unit);
        }
        res.write(out);
    }
}

#undef EDGEANN_AFFINE_ARGS

} // namespace nnet

#endif
