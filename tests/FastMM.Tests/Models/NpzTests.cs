using System.IO.Compression;
using FastMM.Models.IO;
using FastMM.Tests.Support;

namespace FastMM.Tests.Models;

public class NpzTests
{
    [Fact]
    public void RoundTripsFloatAndIntArrays()
    {
        using var tmp = new TestPaths.TempDir();
        var rng = new Random();
        var f = Enumerable.Range(0, 24).Select(_ => (float)rng.NextDouble()).ToArray();
        var i = Enumerable.Range(0, 6).Select(_ => (long)rng.Next()).ToArray();
        Npz.Write(tmp["a.npz"], [NpyArray.Float32("x", f, 2, 3, 4), NpyArray.Int64("ids", i, 6)]);
        var r = Npz.Read(tmp["a.npz"]);
        Assert.Equal(f, r["x"].Floats("t"));
        Assert.Equal([2, 3, 4], r["x"].Shape);
        Assert.Equal(i, r["ids"].Ints("t"));
    }

    [Fact]
    public void ReadsFortranOrderAsRowMajor()
    {
        // numpy stores a transposed 2x3 view column-major; the golden files contain such arrays.
        var g = Npz.Read(TestPaths.Golden("tiny-clip"));
        var lpi = g["logits_per_image"].Floats("t"); var lpt = g["logits_per_text"].Floats("t");
        for (int a = 0; a < 2; a++) for (int b = 0; b < 3; b++) Assert.Equal(lpi[a * 3 + b], lpt[b * 2 + a]);
    }

    private static FastMMException ReadFails(Action<ZipArchive> build)
    {
        using var tmp = new TestPaths.TempDir();
        using (var fs = File.Create(tmp["bad.npz"]))
        using (var zip = new ZipArchive(fs, ZipArchiveMode.Create)) build(zip);
        return Assert.Throws<FastMMException>(() => Npz.Read(tmp["bad.npz"]));
    }

    private static void Entry(ZipArchive z, string name, byte[] bytes)
    {
        using var s = z.CreateEntry(name).Open();
        s.Write(bytes);
    }

    private static byte[] Npy(string header, int dataBytes)
    {
        var h = System.Text.Encoding.Latin1.GetBytes(header);
        var b = new byte[10 + h.Length + dataBytes];
        b[0] = 0x93; "NUMPY"u8.CopyTo(b.AsSpan(1)); b[6] = 1; b[8] = (byte)h.Length; b[9] = (byte)(h.Length >> 8);
        h.CopyTo(b, 10);
        return b;
    }

    [Fact]
    public void NotAZip()
    {
        using var tmp = new TestPaths.TempDir();
        File.WriteAllText(tmp["x.npz"], "hello");
        Assert.Contains("not an .npz archive", Assert.Throws<FastMMException>(() => Npz.Read(tmp["x.npz"])).Message);
    }

    [Fact]
    public void BadMagic() => Assert.Contains("bad magic", ReadFails(z => Entry(z, "a.npy", new byte[32])).Message);

    [Fact]
    public void TruncatedData()
        => Assert.Contains("truncated", ReadFails(z => Entry(z, "a.npy", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", 8))).Message);

    [Fact]
    public void HeaderPastEnd()
    {
        var b = Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n", 4);
        b[8] = 0xFF; b[9] = 0xFF;
        Assert.Contains("header runs past", ReadFails(z => Entry(z, "a.npy", b)).Message);
    }

    [Fact]
    public void UnsupportedDtype()
        => Assert.Contains("unsupported dtype", ReadFails(z => Entry(z, "a.npy", Npy("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }\n", 8))).Message);

    [Fact]
    public void WrongKindIsNamed()
    {
        using var tmp = new TestPaths.TempDir();
        Npz.Write(tmp["a.npz"], [NpyArray.Float32("input_ids", [1f], 1)]);
        var a = Npz.Read(tmp["a.npz"])["input_ids"];
        Assert.Contains("'input_ids' must be an integer array", Assert.Throws<FastMMException>(() => a.Ints("in.npz")).Message);
    }
}
