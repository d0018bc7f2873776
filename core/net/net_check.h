/* The lints of `distilld check` (and of every job at start): what Caffe would refuse, and what it
 * would silently do wrong. The one that matters most is the seed's trap: a BatchNorm that keeps
 * updating its statistics in TRAIN inside a part of the net that is otherwise frozen. */
#ifndef DD_NET_CHECK_H
#define DD_NET_CHECK_H

#include "caffe.pb-c.h"
#include "base/diag.h"
#include "net/net_graph.h"

/* Builds the graph of `net` for `phase` and lints it. Diagnostics go to `diags`. On return
 * *graph_out holds the graph (free with dd_net_graph_free) when graph_out is not NULL. Returns 0
 * or DD_ENOMEM. */
int dd_net_check(dd_net_graph **graph_out, const Caffe__NetParameter *net, Caffe__Phase phase,
                 dd_diags *diags);

/* Checks that `weights` (a .caffemodel's NetParameter, named `weights_name` in messages) fit the
 * graph the way Caffe's CopyTrainedLayersFrom copies them: a layer the net lacks is ignored (a
 * warning), a blob count or shape that differs is an error. Returns 0 or DD_ENOMEM. */
int dd_net_check_weights(const dd_net_graph *g, const Caffe__NetParameter *weights,
                         const char *weights_name, dd_diags *diags);

/* Caffe's Blob::ShapeEquals(BlobProto): legacy num/channels/height/width when any is set
 * (compared with the shape padded to 4 axes), else the `shape` dims. */
int dd_blob_proto_matches(const Caffe__BlobProto *b, const dd_shape *s);

/* Writes the shape a BlobProto declares, as Caffe reads it, in "AxBxC" form. */
char *dd_blob_proto_shape_str(const Caffe__BlobProto *b, char *buf, size_t len);

#endif
