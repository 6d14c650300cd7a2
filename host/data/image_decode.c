/* JPEG/PNG decoding to 8-bit RGB with PIL's colour conversions; see image_decode.h. */
#include "image_decode.h"

#include <spng.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

struct tc_image_decoder {
    tjhandle dj; /* decompressor */
    tjhandle cj; /* compressor, created on first use */
    int64_t max_pixels;
};

static int64_t limit_of(const tc_image_decoder *d) {
    return d && d->max_pixels > 0 ? d->max_pixels : TC_IMAGE_DEFAULT_MAX_PIXELS;
}

tc_status tc_image_decoder_create(tc_image_decoder **out) {
    *out = NULL;
    tc_image_decoder *d = calloc(1, sizeof *d);
    if (!d) return tc_fail(TC_ERR_OOM, "image decoder: out of memory");
    d->dj = tjInitDecompress();
    if (!d->dj) {
        free(d);
        return tc_fail(TC_ERR_BACKEND, "image decoder: tjInitDecompress failed");
    }
    d->max_pixels = TC_IMAGE_DEFAULT_MAX_PIXELS;
    *out = d;
    return TC_OK;
}

void tc_image_decoder_destroy(tc_image_decoder *d) {
    if (!d) return;
    if (d->dj) tjDestroy(d->dj);
    if (d->cj) tjDestroy(d->cj);
    free(d);
}

void tc_image_decoder_set_max_pixels(tc_image_decoder *d, int64_t max_pixels) {
    if (d) d->max_pixels = max_pixels > 0 ? max_pixels : TC_IMAGE_DEFAULT_MAX_PIXELS;
}

void tc_image_free(tc_image *img) {
    if (!img) return;
    free(img->px);
    img->px = NULL;
    img->w = img->h = 0;
}

tc_image_format tc_image_sniff(const uint8_t *data, size_t len) {
    if (len >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return TC_IMG_JPEG;
    if (len >= 8 && memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0) return TC_IMG_PNG;
    if (len >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0)
        return TC_IMG_WEBP;
    return TC_IMG_UNKNOWN;
}

static const char *nm(const char *name) {
    return name ? name : "image";
}

/* true when an APP14 "Adobe" marker precedes the first scan: libjpeg then
 * hands back inverted CMYK, which Pillow reads with rawmode "CMYK;I". */
static int jpeg_has_adobe_marker(const uint8_t *p, size_t len) {
    size_t i = 2;
    while (i + 4 <= len) {
        if (p[i] != 0xFF) return 0;
        uint8_t m = p[i + 1];
        if (m == 0xFF) {
            i++;
            continue;
        }
        if (m == 0xDA || m == 0xD9) return 0; /* start of scan / end of image */
        size_t seg = ((size_t)p[i + 2] << 8) | p[i + 3];
        if (seg < 2) return 0;
        if (m == 0xEE && seg >= 7 && i + 4 + 5 <= len && memcmp(p + i + 4, "Adobe", 5) == 0)
            return 1;
        i += 2 + seg;
    }
    return 0;
}

/* the header's sizes against the side and pixel limits, before any pixel is decoded */
static tc_status check_dims(const char *name, long long w, long long h, int64_t max_pixels) {
    if (w <= 0 || h <= 0 || w > TC_IMAGE_MAX_SIDE || h > TC_IMAGE_MAX_SIDE)
        return tc_fail(TC_ERR_FORMAT, "%s: image size %lldx%lld out of range (1..%d per side)",
                       nm(name), w, h, TC_IMAGE_MAX_SIDE);
    if (w * h > max_pixels)
        return tc_fail(TC_ERR_DATA,
                       "%s: image of %lldx%lld = %lld pixels is over the limit of %lld "
                       "(a decompression bomb?)",
                       nm(name), w, h, w * h, (long long)max_pixels);
    return TC_OK;
}

/* after a failed call a TurboJPEG 2.1 handle can stay in a bad state and
 * fail the next, valid image: start a fresh one */
static void reset_handle(tc_image_decoder *d) {
    if (d->dj) tjDestroy(d->dj);
    d->dj = tjInitDecompress(); /* NULL is reported by the next header call */
}

static tc_status jpeg_header(tc_image_decoder *d, const uint8_t *data, size_t len, const char *name,
                             int *w, int *h, int *subsamp, int *cs) {
    if (len > (size_t)0xFFFFFFFFu)
        return tc_fail(TC_ERR_FORMAT, "%s: JPEG larger than 4 GiB", nm(name));
    if (!d->dj) return tc_fail(TC_ERR_BACKEND, "%s: no JPEG decoder", nm(name));
    /* libjpeg-turbo 2.1 returns success for a stream that ends before its
     * frame header (FF D8 FF D9) without writing any of these */
    *w = *h = 0;
    *subsamp = *cs = -1;
    if (tjDecompressHeader3(d->dj, data, (unsigned long)len, w, h, subsamp, cs) != 0) {
        tc_status st =
            tc_fail(TC_ERR_FORMAT, "%s: bad JPEG header: %s", nm(name), tjGetErrorStr2(d->dj));
        reset_handle(d);
        return st;
    }
    if (*w <= 0 || *h <= 0 || *cs < 0) {
        reset_handle(d);
        return tc_fail(TC_ERR_FORMAT, "%s: corrupt JPEG: no frame header", nm(name));
    }
    return check_dims(name, *w, *h, limit_of(d));
}

/* smallest scale factor <= 1 keeping min(w,h) scaled >= min_side */
static tjscalingfactor pick_scale(int w, int h, int min_side) {
    tjscalingfactor best = {1, 1};
    if (min_side <= 0) return best;
    int n = 0;
    tjscalingfactor *sf = tjGetScalingFactors(&n);
    int shortest = w < h ? w : h;
    for (int i = 0; sf && i < n; i++) {
        if (sf[i].num * best.denom >= best.num * sf[i].denom) continue; /* not smaller */
        if (sf[i].num > sf[i].denom) continue;
        if (TJSCALED(shortest, sf[i]) >= min_side) best = sf[i];
    }
    return best;
}

static tc_status decode_jpeg(tc_image_decoder *d, const uint8_t *data, size_t len, const char *name,
                             int min_side, tc_image *out) {
    int w, h, subsamp, cs;
    TC_TRY(jpeg_header(d, data, len, name, &w, &h, &subsamp, &cs));
    tjscalingfactor sf = pick_scale(w, h, min_side);
    int ow = TJSCALED(w, sf), oh = TJSCALED(h, sf);
    int cmyk = (cs == TJCS_CMYK || cs == TJCS_YCCK);
    int gray = (cs == TJCS_GRAY);
    int pf = cmyk ? TJPF_CMYK : gray ? TJPF_GRAY : TJPF_RGB;
    int bpp = tjPixelSize[pf];
    size_t npx = (size_t)ow * (size_t)oh;
    uint8_t *buf = malloc(npx * (size_t)bpp);
    if (!buf) return tc_fail(TC_ERR_OOM, "%s: out of memory for %dx%d image", nm(name), ow, oh);
    if (tjDecompress2(d->dj, data, (unsigned long)len, buf, ow, 0, oh, pf, 0) != 0) {
        /* libjpeg warnings about extraneous bytes are tolerated as PIL does;
         * a truncated stream (PIL: "image file is truncated") is not */
        const char *msg = tjGetErrorStr2(d->dj);
        int warning = tjGetErrorCode(d->dj) == TJERR_WARNING;
        if (!warning || strstr(msg, "Premature end") || strstr(msg, "premature end")) {
            free(buf);
            tc_status st = tc_fail(TC_ERR_FORMAT, "%s: corrupt JPEG: %s", nm(name), msg);
            reset_handle(d);
            return st;
        }
    }
    if (pf == TJPF_RGB) {
        out->px = buf;
    } else {
        uint8_t *rgb = malloc(npx * 3);
        if (!rgb) {
            free(buf);
            return tc_fail(TC_ERR_OOM, "%s: out of memory", nm(name));
        }
        if (gray) {
            for (size_t i = 0; i < npx; i++)
                rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = buf[i];
        } else {
            int inv = jpeg_has_adobe_marker(data, len);
            for (size_t i = 0; i < npx; i++) {
                const uint8_t *s = buf + 4 * i;
                int c = s[0], m = s[1], y = s[2], k = s[3];
                if (inv) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
                int nk = 255 - k;
                int v[3] = {c, m, y};
                for (int ch = 0; ch < 3; ch++) {
                    int t = v[ch] * nk + 128;
                    int r = nk - (((t >> 8) + t) >> 8); /* Pillow's MULDIV255 */
                    rgb[3 * i + ch] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
                }
            }
        }
        free(buf);
        out->px = rgb;
    }
    out->w = ow;
    out->h = oh;
    return TC_OK;
}

static tc_status decode_png(const uint8_t *data, size_t len, const char *name, tc_image *out,
                            int probe_only, int64_t max_pixels) {
    tc_status st = TC_OK;
    spng_ctx *ctx = spng_ctx_new(0);
    uint8_t *px = NULL;
    if (!ctx) return tc_fail(TC_ERR_OOM, "%s: out of memory", nm(name));
    int e = spng_set_image_limits(ctx, TC_IMAGE_MAX_SIDE, TC_IMAGE_MAX_SIDE);
    if (e) {
        st = tc_fail(TC_ERR_BACKEND, "%s: libspng image limits: %s", nm(name), spng_strerror(e));
        goto done;
    }
    e = spng_set_chunk_limits(ctx, (size_t)1 << 26, (size_t)1 << 26);
    if (e) {
        st = tc_fail(TC_ERR_BACKEND, "%s: libspng chunk limits: %s", nm(name), spng_strerror(e));
        goto done;
    }
    e = spng_set_png_buffer(ctx, data, len);
    struct spng_ihdr ihdr;
    memset(&ihdr, 0, sizeof ihdr);
    if (!e) e = spng_get_ihdr(ctx, &ihdr);
    if (e) {
        st = tc_fail(TC_ERR_FORMAT, "%s: bad PNG header: %s", nm(name), spng_strerror(e));
        goto done;
    }
    st = check_dims(name, ihdr.width, ihdr.height, max_pixels);
    if (st != TC_OK || probe_only) {
        out->w = (int)ihdr.width;
        out->h = (int)ihdr.height;
        goto done;
    }
    size_t need = 0;
    e = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &need);
    if (e || need != (size_t)ihdr.width * ihdr.height * 3) {
        st = tc_fail(TC_ERR_FORMAT, "%s: unsupported PNG (%s)", nm(name),
                     e ? spng_strerror(e) : "size");
        goto done;
    }
    px = malloc(need);
    if (!px) {
        st = tc_fail(TC_ERR_OOM, "%s: out of memory", nm(name));
        goto done;
    }
    /* no SPNG_DECODE_TRNS / gamma: alpha and tRNS are dropped, as convert('RGB') does */
    e = spng_decode_image(ctx, px, need, SPNG_FMT_RGB8, 0);
    if (e) {
        st = tc_fail(TC_ERR_FORMAT, "%s: corrupt PNG: %s", nm(name), spng_strerror(e));
        free(px);
        px = NULL;
        goto done;
    }
    out->px = px;
    out->w = (int)ihdr.width;
    out->h = (int)ihdr.height;
done:
    spng_ctx_free(ctx);
    return st;
}

tc_status tc_image_decode(tc_image_decoder *dec, const uint8_t *data, size_t len, const char *name,
                          int min_side, tc_image *out) {
    out->px = NULL;
    out->w = out->h = 0;
    if (!data || len == 0) return tc_fail(TC_ERR_FORMAT, "%s: empty image", nm(name));
    tc_image_format f = tc_image_sniff(data, len);
    if (f == TC_IMG_PNG) return decode_png(data, len, name, out, 0, limit_of(dec));
    if (f == TC_IMG_WEBP)
        return tc_fail(TC_ERR_UNSUPPORTED, "%s: WebP images are not supported by this build",
                       nm(name));
    if (f != TC_IMG_JPEG) return tc_fail(TC_ERR_FORMAT, "%s: not a JPEG or PNG image", nm(name));
    tc_image_decoder *tmp = NULL;
    if (!dec) {
        TC_TRY(tc_image_decoder_create(&tmp));
        dec = tmp;
    }
    tc_status st = decode_jpeg(dec, data, len, name, min_side, out);
    tc_image_decoder_destroy(tmp);
    return st;
}

tc_status tc_image_probe(tc_image_decoder *dec, const uint8_t *data, size_t len, const char *name,
                         int *w, int *h) {
    *w = *h = 0;
    if (!data || len == 0) return tc_fail(TC_ERR_FORMAT, "%s: empty image", nm(name));
    tc_image_format f = tc_image_sniff(data, len);
    if (f == TC_IMG_PNG) {
        tc_image img = {0, 0, NULL};
        TC_TRY(decode_png(data, len, name, &img, 1, limit_of(dec)));
        *w = img.w;
        *h = img.h;
        return TC_OK;
    }
    if (f != TC_IMG_JPEG) return tc_fail(TC_ERR_FORMAT, "%s: not a JPEG or PNG image", nm(name));
    tc_image_decoder *tmp = NULL;
    if (!dec) {
        TC_TRY(tc_image_decoder_create(&tmp));
        dec = tmp;
    }
    int subsamp = -1, cs = -1;
    tc_status st = jpeg_header(dec, data, len, name, w, h, &subsamp, &cs);
    tc_image_decoder_destroy(tmp);
    return st;
}

tc_status tc_png_encode(const uint8_t *px, int w, int h, int channels, uint8_t **png, size_t *len) {
    *png = NULL;
    *len = 0;
    if (w <= 0 || h <= 0 || (channels != 1 && channels != 3))
        return tc_fail(TC_ERR_ARG, "png encode: bad image %dx%dx%d", w, h, channels);
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    if (!ctx) return tc_fail(TC_ERR_OOM, "png encode: out of memory");
    struct spng_ihdr ihdr = {0};
    ihdr.width = (uint32_t)w;
    ihdr.height = (uint32_t)h;
    ihdr.bit_depth = 8;
    ihdr.color_type = channels == 1 ? SPNG_COLOR_TYPE_GRAYSCALE : SPNG_COLOR_TYPE_TRUECOLOR;
    int e = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    if (!e) e = spng_set_ihdr(ctx, &ihdr);
    if (!e)
        e = spng_encode_image(ctx, px, (size_t)w * h * channels, SPNG_FMT_PNG,
                              SPNG_ENCODE_FINALIZE);
    if (e) {
        spng_ctx_free(ctx);
        return tc_fail(TC_ERR_FORMAT, "png encode: %s", spng_strerror(e));
    }
    size_t n = 0;
    void *buf = spng_get_png_buffer(ctx, &n, &e);
    spng_ctx_free(ctx);
    if (!buf || e) {
        free(buf);
        return tc_fail(TC_ERR_FORMAT, "png encode: %s", spng_strerror(e));
    }
    *png = buf;
    *len = n;
    return TC_OK;
}

tc_status tc_jpeg_encode(tc_image_decoder *dec, const tc_image *img, int quality, uint8_t **jpg,
                         size_t *len) {
    *jpg = NULL;
    *len = 0;
    if (!dec) return tc_fail(TC_ERR_ARG, "jpeg encode: no decoder handle");
    if (!dec->cj) dec->cj = tjInitCompress();
    if (!dec->cj) return tc_fail(TC_ERR_BACKEND, "jpeg encode: tjInitCompress failed");
    unsigned char *buf = NULL;
    unsigned long n = 0;
    if (tjCompress2(dec->cj, img->px, img->w, 0, img->h, TJPF_RGB, &buf, &n, TJSAMP_420, quality,
                    0) != 0) {
        tjFree(buf);
        return tc_fail(TC_ERR_FORMAT, "jpeg encode: %s", tjGetErrorStr2(dec->cj));
    }
    *jpg = malloc(n);
    if (!*jpg) {
        tjFree(buf);
        return tc_fail(TC_ERR_OOM, "jpeg encode: out of memory");
    }
    memcpy(*jpg, buf, n);
    *len = n;
    tjFree(buf);
    return TC_OK;
}
