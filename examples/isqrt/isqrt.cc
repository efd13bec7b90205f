// Quake III's fast inverse square root, as a WebAssembly module of its own
// with no imports: a main module imports it by name (module "isqrt",
// function "_Z7Q_rsqrtf", the C++ mangled name of Q_rsqrt(float)).
//
// clang++ --target=wasm32 -nostdlib -O2 -Wl,--no-entry -Wl,--export=_Z7Q_rsqrtf -o isqrt.wasm isqrt.cc

float Q_rsqrt(float number)
{
    long i;
    float x2, y;
    const float threehalfs = 1.5F;

    x2 = number * 0.5F;
    y = number;
    i = *(long *)&y;            // evil floating point bit level hacking
    i = 0x5f3759df - (i >> 1);  // what the fuck?
    y = *(float *)&i;
    y = y * (threehalfs - (x2 * y * y));  // 1st iteration

    return y;
}
