// edgeann's recurrent layers for hls4ml, GRU and LSTM: the exact fixed-point arithmetic of edgeann.ir.GRU and
// edgeann.ir.LSTM, bit for bit.
//
// Registered with hls4ml through its extension API by edgeann/backends/hls/recurrent.py, which writes the
// configuration structs (every type below explicit, from the fixed-point graph) and the tables.
//
// Every step starts with the two matrix products, hls4ml's nnet::dense with exact accumulators (accum_t,
// recurrent_accum_t: AP_WRAP types that hold every sum), gate rows stacked as in PyTorch:
//   gi = W_ih x_t + b_ih, gh = W_hh h + b_hh
// GRU (rows r, z, n), from h = 0:
//   r = sigmoid_r[q_r(gi_r + gh_r)], z = sigmoid_z[q_z(gi_z + gh_z)], n = tanh[q_n(gi_n + r * gh_n)]
//   h = q_h(n + z * (h - n))
// LSTM (rows i, f, g, o), from h = c = 0:
//   i, f, o = sigmoid_{i,f,o}[q(gi + gh)], g = tanh_g[q_g(gi_g + gh_g)]
//   c = q_c(f * c + i * g), h = q_h(o * tanh_c[c])
// q_*: assignment to the gate, cell or state type (AP_TRN, AP_SAT): floor, then saturate. Sums and products
// of ap_fixed values are exact (ap_fixed widens its results), so only these assignments round. A table has one
// entry per code of its index type, indexed by code - min code (the offset-binary bits of a signed code).
//
// Inputs: io_parallel arrays (the sequence flattened step-major, x[t * n_in + i]) or io_stream (one pack of
// n_in values per step). Output: the last state (n_state values) or, with return_sequences, every state
// (step-major). The step loop is sequential (each step needs the previous state); within a step the
// matrix products follow the layer's strategy and reuse factor (hls4ml's dense kernels) and the gate
// arithmetic of all units is unrolled.

#ifndef NNET_EDGEANN_RECURRENT_H_
#define NNET_EDGEANN_RECURRENT_H_

#include "hls_stream.h"
#include "nnet_common.h"
#include "nnet_dense.h"

namespace nnet {

struct edgeann_recurrent_config {
    static const unsigned n_in = 1;       // features per step
    static const unsigned n_state = 1;    // hidden units
    static const unsigned n_sequence = 1; // steps
    static const unsigned n_out = 1;      // n_state, or n_sequence * n_state with return_sequences
    static const bool return_sequences = false;
    // and: weight_t, bias_t, recurrent_weight_t, recurrent_bias_t, accum_t, recurrent_accum_t, state_t, the gate
    // (and cell) types, one type and size per table; mult_config_ih, mult_config_hh (nnet::dense configs)
};

// The table entry of a value: its integer code minus the type's smallest code.
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N> unsigned edgeann_table_index(ap_fixed_base<W, I, S, Q, O, N> v) {
    #pragma HLS INLINE
    unsigned bits = v.range(W - 1, 0).to_uint();
    return S ? bits ^ (1u << (W - 1)) : bits;
}

// One step's accumulators: gi = W_ih x_t + b_ih and gh = W_hh h + b_hh.
template <class data_T, class state_T, typename CONFIG_T, unsigned G>
void edgeann_accumulators(data_T data[CONFIG_T::n_sequence * CONFIG_T::n_in], unsigned t, state_T h[CONFIG_T::n_state],
                          typename CONFIG_T::accum_t gi[G * CONFIG_T::n_state],
                          typename CONFIG_T::recurrent_accum_t gh[G * CONFIG_T::n_state],
                          typename CONFIG_T::weight_t weight[CONFIG_T::n_in * G * CONFIG_T::n_state],
                          typename CONFIG_T::bias_t bias[G * CONFIG_T::n_state],
                          typename CONFIG_T::recurrent_weight_t recurrent_weight[CONFIG_T::n_state * G * CONFIG_T::n_state],
                          typename CONFIG_T::recurrent_bias_t recurrent_bias[G * CONFIG_T::n_state]) {
    #pragma HLS INLINE
    data_T x[CONFIG_T::n_in];
    #pragma HLS ARRAY_PARTITION variable=x complete
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        x[i] = data[t * CONFIG_T::n_in + i];
    }
    nnet::dense<data_T, typename CONFIG_T::accum_t, typename CONFIG_T::mult_config_ih>(x, gi, weight, bias);
    nnet::dense<state_T, typename CONFIG_T::recurrent_accum_t, typename CONFIG_T::mult_config_hh>(h, gh, recurrent_weight,
                                                                                                  recurrent_bias);
}

template <class data_T, class res_T, typename CONFIG_T>
void edgeann_gru(data_T data[CONFIG_T::n_sequence * CONFIG_T::n_in], res_T res[CONFIG_T::n_out],
                 typename CONFIG_T::weight_t weight[CONFIG_T::n_in * 3 * CONFIG_T::n_state],
                 typename CONFIG_T::bias_t bias[3 * CONFIG_T::n_state],
                 typename CONFIG_T::recurrent_weight_t recurrent_weight[CONFIG_T::n_state * 3 * CONFIG_T::n_state],
                 typename CONFIG_T::recurrent_bias_t recurrent_bias[3 * CONFIG_T::n_state],
                 typename CONFIG_T::sigmoid_r_t sigmoid_r[CONFIG_T::sigmoid_r_size],
                 typename CONFIG_T::sigmoid_z_t sigmoid_z[CONFIG_T::sigmoid_z_size],
                 typename CONFIG_T::tanh_t tanh_table[CONFIG_T::tanh_size]) {
    const unsigned H = CONFIG_T::n_state;
    typename CONFIG_T::state_t h[H];
    #pragma HLS ARRAY_PARTITION variable=h complete
    for (unsigned j = 0; j < H; j++) {
        #pragma HLS UNROLL
        h[j] = 0;
    }
Steps:
    for (unsigned t = 0; t < CONFIG_T::n_sequence; t++) {
        typename CONFIG_T::accum_t gi[3 * H];
        typename CONFIG_T::recurrent_accum_t gh[3 * H];
        #pragma HLS ARRAY_PARTITION variable=gi complete
        #pragma HLS ARRAY_PARTITION variable=gh complete
        edgeann_accumulators<data_T, typename CONFIG_T::state_t, CONFIG_T, 3>(data, t, h, gi, gh, weight, bias, recurrent_weight,
                                                                              recurrent_bias);
    Units:
        for (unsigned j = 0; j < H; j++) {
            #pragma HLS UNROLL
            typename CONFIG_T::gate_r_t pre_r = gi[j] + gh[j];
            typename CONFIG_T::gate_z_t pre_z = gi[H + j] + gh[H + j];
            typename CONFIG_T::sigmoid_r_t r = sigmoid_r[edgeann_table_index(pre_r)];
            typename CONFIG_T::sigmoid_z_t z = sigmoid_z[edgeann_table_index(pre_z)];
            typename CONFIG_T::gate_n_t pre_n = gi[2 * H + j] + r * gh[2 * H + j];
            typename CONFIG_T::tanh_t n = tanh_table[edgeann_table_index(pre_n)];
            h[j] = n + z * (h[j] - n);
            if (CONFIG_T::return_sequences)
                res[t * H + j] = h[j];
        }
    }
    if (!CONFIG_T::return_sequences) {
        for (unsigned j = 0; j < H; j++) {
            #pragma HLS UNROLL
            res[j] = h[j];
        }
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void edgeann_lstm(data_T data[CONFIG_T::n_sequence * CONFIG_T::n_in], res_T res[CONFIG_T::n_out],
                  typename CONFIG_T::weight_t weight[CONFIG_T::n_in * 4 * CONFIG_T::n_state],
                  typename CONFIG_T::bias_t bias[4 * CONFIG_T::n_state],
                  typename CONFIG_T::recurrent_weight_t recurrent_weight[CONFIG_T::n_state * 4 * CONFIG_T::n_state],
                  typename CONFIG_T::recurrent_bias_t recurrent_bias[4 * CONFIG_T::n_state],
                  typename CONFIG_T::sigmoid_i_t sigmoid_i[CONFIG_T::sigmoid_i_size],
                  typename CONFIG_T::sigmoid_f_t sigmoid_f[CONFIG_T::sigmoid_f_size],
                  typename CONFIG_T::tanh_g_t tanh_g[CONFIG_T::tanh_g_size],
                  typename CONFIG_T::sigmoid_o_t sigmoid_o[CONFIG_T::sigmoid_o_size],
                  typename CONFIG_T::tanh_c_t tanh_c[CONFIG_T::tanh_c_size]) {
    const unsigned H = CONFIG_T::n_state;
    typename CONFIG_T::state_t h[H];
    typename CONFIG_T::cell_t c[H];
    #pragma HLS ARRAY_PARTITION variable=h complete
    #pragma HLS ARRAY_PARTITION variable=c complete
    for (unsigned j = 0; j < H; j++) {
        #pragma HLS UNROLL
        h[j] = 0;
        c[j] = 0;
    }
Steps:
    for (unsigned t = 0; t < CONFIG_T::n_sequence; t++) {
        typename CONFIG_T::accum_t gi[4 * H];
        typename CONFIG_T::recurrent_accum_t gh[4 * H];
        #pragma HLS ARRAY_PARTITION variable=gi complete
        #pragma HLS ARRAY_PARTITION variable=gh complete
        edgeann_accumulators<data_T, typename CONFIG_T::state_t, CONFIG_T, 4>(data, t, h, gi, gh, weight, bias, recurrent_weight,
                                                                              recurrent_bias);
    Units:
        for (unsigned j = 0; j < H; j++) {
            #pragma HLS UNROLL
            typename CONFIG_T::gate_i_t pre_i = gi[j] + gh[j];
            typename CONFIG_T::gate_f_t pre_f = gi[H + j] + gh[H + j];
            typename CONFIG_T::gate_g_t pre_g = gi[2 * H + j] + gh[2 * H + j];
            typename CONFIG_T::gate_o_t pre_o = gi[3 * H + j] + gh[3 * H + j];
            typename CONFIG_T::sigmoid_i_t i = sigmoid_i[edgeann_table_index(pre_i)];
            typename CONFIG_T::sigmoid_f_t f = sigmoid_f[edgeann_table_index(pre_f)];
            typename CONFIG_T::tanh_g_t g = tanh_g[edgeann_table_index(pre_g)];
            typename CONFIG_T::sigmoid_o_t o = sigmoid_o[edgeann_table_index(pre_o)];
            c[j] = f * c[j] + i * g;
            h[j] = o * tanh_c[edgeann_table_index(c[j])];
            if (CONFIG_T::return_sequences)
                res[t * H + j] = h[j];
        }
    }
    if (!CONFIG_T::return_sequences) {
        for (unsigned j = 0; j < H; j++) {
            #pragma HLS UNROLL
            res[j] = h[j];
        }
    }
}

// io_stream: one pack per step in, the result's packs out, around the array version.
template <class data_T, unsigned N> void edgeann_read_stream(hls::stream<data_T> &data, typename data_T::value_type out[N]) {
    for (unsigned p = 0; p < N / data_T::size; p++) {
        data_T pack = data.read();
        for (unsigned i = 0; i < data_T::size; i++) {
            #pragma HLS UNROLL
            out[p * data_T::size + i] = pack[i];
        }
    }
}

template <class res_T, unsigned N> void edgeann_write_stream(typename res_T::value_type in[N], hls::stream<res_T> &res) {
    for (unsigned p = 0; p < N / res_T::size; p++) {
        res_T pack;
        PRAGMA_DATA_PACK(pack)
        for (unsigned i = 0; i < res_T::size; i++) {
            #pragma HLS UNROLL
            pack[i] = in[p * res_T::size + i];
        }
        res.write(pack);
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void edgeann_gru(hls::stream<data_T> &data, hls::stream<res_T> &res,
                 typename CONFIG_T::weight_t weight[CONFIG_T::n_in * 3 * CONFIG_T::n_state],
                 typename CONFIG_T::bias_t bias[3 * CONFIG_T::n_state],
                 typename CONFIG_T::recurrent_weight_t recurrent_weight[CONFIG_T::n_state * 3 * CONFIG_T::n_state],
                 typename CONFIG_T::recurrent_bias_t recurrent_bias[3 * CONFIG_T::n_state],
                 typename CONFIG_T::sigmoid_r_t sigmoid_r[CONFIG_T::sigmoid_r_size],
                 typename CONFIG_T::sigmoid_z_t sigmoid_z[CONFIG_T::sigmoid_z_size],
                 typename CONFIG_T::tanh_t tanh_table[CONFIG_T::tanh_size]) {
    typename data_T::value_type in[CONFIG_T::n_sequence * CONFIG_T::n_in];
    typename res_T::value_type out[CONFIG_T::n_out];
    edgeann_read_stream<data_T, CONFIG_T::n_sequence * CONFIG_T::n_in>(data, in);
    edgeann_gru<typename data_T::value_type, typename res_T::value_type, CONFIG_T>(in, out, weight, bias, recurrent_weight,
                                                                                   recurrent_bias, sigmoid_r, sigmoid_z, tanh_table);
    edgeann_write_stream<res_T, CONFIG_T::n_out>(out, res);
}

template <class data_T, class res_T, typename CONFIG_T>
void edgeann_lstm(hls::stream<data_T> &data, hls::stream<res_T> &res,
                  typename CONFIG_T::weight_t weight[CONFIG_T::n_in * 4 * CONFIG_T::n_state],
                  typename CONFIG_T::bias_t bias[4 * CONFIG_T::n_state],
                  typename CONFIG_T::recurrent_weight_t recurrent_weight[CONFIG_T::n_state * 4 * CONFIG_T::n_state],
                  typename CONFIG_T::recurrent_bias_t recurrent_bias[4 * CONFIG_T::n_state],
                  typename CONFIG_T::sigmoid_i_t sigmoid_i[CONFIG_T::sigmoid_i_size],
                  typename CONFIG_T::sigmoid_f_t sigmoid_f[CONFIG_T::sigmoid_f_size],
                  typename CONFIG_T::tanh_g_t tanh_g[CONFIG_T::tanh_g_size],
                  typename CONFIG_T::sigmoid_o_t sigmoid_o[CONFIG_T::sigmoid_o_size],
                  typename CONFIG_T::tanh_c_t tanh_c[CONFIG_T::tanh_c_size]) {
    typename data_T::value_type in[CONFIG_T::n_sequence * CONFIG_T::n_in];
    typename res_T::value_type out[CONFIG_T::n_out];
    edgeann_read_stream<data_T, CONFIG_T::n_sequence * CONFIG_T::n_in>(data, in);
    edgeann_lstm<typename data_T::value_type, typename res_T::value_type, CONFIG_T>(
        in, out, weight, bias, recurrent_weight, recurrent_bias, sigmoid_i, sigmoid_f, tanh_g, sigmoid_o, tanh_c);
    edgeann_write_stream<res_T, CONFIG_T::n_out>(out, res);
}

} // namespace nnet

#endif
