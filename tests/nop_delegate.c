/* A minimal TFLite external delegate (the plugin ABI of tensorflow/lite/delegates/external): it loads,
 * and its Prepare takes no node (mode=take-nothing, the default), rejects the model (mode=reject), or
 * its factory fails (mode=fail). Compiled by tests/test_agent_delegates.py: no real accelerator
 * delegate ships in the installed wheels. TfLiteDelegate's layout is that of tensorflow/lite/core/c/
 * common.h (2.14 / LiteRT 2.3), padded so a runtime reading a newer field reads zeros. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
typedef struct TfLiteContext TfLiteContext;
typedef struct TfLiteDelegate {
  void* data_;
  int (*Prepare)(TfLiteContext*, struct TfLiteDelegate*);
  int (*CopyFromBufferHandle)(TfLiteContext*, struct TfLiteDelegate*, int, void*);
  int (*CopyToBufferHandle)(TfLiteContext*, struct TfLiteDelegate*, int, void*);
  void (*FreeBufferHandle)(TfLiteContext*, struct TfLiteDelegate*, int*);
  int64_t flags;
  void* opaque_delegate_builder;
  char reserved[256];
} TfLiteDelegate;
static int prepare_ok(TfLiteContext* c, TfLiteDelegate* d) { (void)c; (void)d; return 0; }
static int prepare_reject(TfLiteContext* c, TfLiteDelegate* d) { (void)c; (void)d; return 1; }
TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n, void (*report)(const char*)) {
  TfLiteDelegate* d = calloc(1, sizeof *d);
  d->Prepare = prepare_ok;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(keys[i], "mode") == 0 && strcmp(values[i], "reject") == 0) d->Prepare = prepare_reject;
    if (strcmp(keys[i], "mode") == 0 && strcmp(values[i], "fail") == 0) { if (report) report("mode=fail asked"); free(d); return NULL; }
  }
  return d;
}
void tflite_plugin_destroy_delegate(TfLiteDelegate* d) { free(d); }
