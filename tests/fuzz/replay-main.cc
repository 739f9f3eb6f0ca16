// The fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput once on
// every file of the directories (or files) on the command line, in name
// order.  Built by the normal (gcc) builds as the meson suite "fuzz", so
// the seed corpora - and every crashing input added to them as a
// regression - run in the plain, ASan+UBSan and TSan builds.  A failing
// input aborts (the harness's CHECK or a sanitizer) and names itself first.
#include <glib.h>

#include <cstdint>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void RunFile(const std::string &path, unsigned *n)
{
    gchar *buf = nullptr;
    gsize len = 0;
    GError *err = nullptr;
    if (!g_file_get_contents(path.c_str(), &buf, &len, &err)) {
        fprintf(stderr, "replay: %s: %s\n", path.c_str(), err->message);
        g_error_free(err);
        exit(2);
    }
    fprintf(stderr, "replay: %s (%zu bytes)\n", path.c_str(), size_t(len));
    // An exact-size copy, so ASan sees a read past the input.
    std::vector<uint8_t> *copy = new std::vector<uint8_t>(buf, buf + len);
    LLVMFuzzerTestOneInput(copy->data(), copy->size());
    delete copy;
    g_free(buf);
    (*n)++;
}

int main(int argc, char **argv)
{
    unsigned n = 0;
    for (int i = 1; i < argc; i++) {
        if (!g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
            RunFile(argv[i], &n);
            continue;
        }
        GDir *d = g_dir_open(argv[i], 0, nullptr);
        if (!d) {
            fprintf(stderr, "replay: cannot open %s\n", argv[i]);
            return 2;
        }
        std::vector<std::string> names;
        while (const char *name = g_dir_read_name(d)) {
            names.push_back(name);
        }
        g_dir_close(d);
        std::sort(names.begin(), names.end());
        for (const std::string &name : names) {
            RunFile(std::string(argv[i]) + "/" + name, &n);
        }
    }
    printf("replayed %u inputs\n", n);
    return n ? 0 : 1;
}
