/* the shard reader of the webdataset source (wds_reader.c), opened by
 * name: a local tar, a pipe: command or an http(s) URL (shard_stream.h). */
#ifndef TC_WDS_READER_H
#define TC_WDS_READER_H

#include "source.h"

/* opens the shard url (retrying a failing command as o->stream says);
 * its samples carry `part`. o may be NULL (defaults). */
tc_status tc_wds_reader_open_url(const char *url, int part, const tc_source_opts *o,
                                 tc_shard_reader **out);

#endif
