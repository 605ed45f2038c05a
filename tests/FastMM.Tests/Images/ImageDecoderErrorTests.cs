using System.Buffers.Binary;
using System.IO.Compression;
using FastMM.Runtime.Images;
using Xunit;
using Xunit.Abstractions;

namespace FastMM.Tests.Images;

/// <summary>Bad input must surface as exactly one FastMMException whose message names the file and the problem.</summary>
public sealed class ImageDecoderErrorTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fastmm-img-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, byte[] bytes)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private FastMMException AssertFails(string path, params string[] expectedFragments)
    {
        var e = Assert.Throws<FastMMException>(() => ImageDecoder.Decode(path));
        output.WriteLine(e.Message);
        Assert.Contains(path, e.Message);
        foreach (var f in expectedFragments)
            Assert.Contains(f, e.Message, StringComparison.OrdinalIgnoreCase);
        return e;
    }

    private static byte[] FirstHalf(string fixture)
    {
        byte[] all = File.ReadAllBytes(ImageTestData.File(fixture));
        return all[..(all.Length / 2)];
    }

    [Fact]
    public void RandomBytesFile() =>
        AssertFails(Write("random.jpg", RandomBytes(4096, seed: 7)), "not a recognized image format");

    [Fact]
    public void TruncatedPng() => AssertFails(Write("half.png", FirstHalf("shapes_300x200.png")), "truncated");

    [Fact]
    public void TruncatedJpeg() => AssertFails(Write("half.jpg", FirstHalf("photo_160x120.jpg")), "truncated");

    [Fact]
    public void TruncatedWebp() => AssertFails(Write("half.webp", FirstHalf("lossless_64x48.webp")));

    [Fact]
    public void EmptyFile() => AssertFails(Write("empty.png", []), "empty");

    [Fact]
    public void TextFileNamedPng() =>
        AssertFails(Write("notes.png", "this is not an image\n"u8.ToArray()), "not a recognized image format");

    [Fact]
    public void DirectoryPath() => AssertFails(_dir, "directory");

    [Fact]
    public void MissingFile() => AssertFails(Path.Combine(_dir, "nope.png"), "not found");

    [Fact]
    public void CorruptPngBody()
    {
        // Valid signature and header, garbage compressed data.
        byte[] png = File.ReadAllBytes(ImageTestData.File("noise_64x48.png"));
        var rng = new Random(3);
        for (int i = 60; i < png.Length - 20; i++) png[i] = (byte)rng.Next(256);
        AssertFails(Write("garbled.png", png));
    }

    [Fact]
    public void DecompressionBomb_IsRefusedBeforeDecoding()
    {
        // A tiny PNG declaring 20000 x 20000 (400 megapixels).
        AssertFails(Write("bomb.png", MinimalPng(20000, 20000)), "megapixel");
    }

    [Fact]
    public void Span_EmptyAndGarbage_NameTheSource()
    {
        var e1 = Assert.Throws<FastMMException>(() => ImageDecoder.Decode(ReadOnlySpan<byte>.Empty, "upload#1"));
        Assert.Contains("upload#1", e1.Message);
        var e2 = Assert.Throws<FastMMException>(() => ImageDecoder.Decode(RandomBytes(100, 1), "upload#2"));
        Assert.Contains("upload#2", e2.Message);
    }

    private static byte[] RandomBytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        b[0] = 0x00; // make sure no magic number matches by chance
        return b;
    }

    private static byte[] MinimalPng(int width, int height)
    {
        using var ms = new MemoryStream();
        ms.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = 8; ihdr[9] = 2; // 8-bit RGB
        WriteChunk(ms, "IHDR", ihdr);
        using (var z = new MemoryStream())
        {
            using (var zs = new ZLibStream(z, CompressionLevel.Fastest, leaveOpen: true))
                zs.Write(new byte[1 + width * 3]); // one row only
            WriteChunk(ms, "IDAT", z.ToArray());
        }
        WriteChunk(ms, "IEND", []);
        return ms.ToArray();
    }

    private static void WriteChunk(Stream s, string type, byte[] data)
    {
        Span<byte> len = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
        s.Write(len);
        byte[] typeAndData = [.. System.Text.Encoding.ASCII.GetBytes(type), .. data];
        s.Write(typeAndData);
        BinaryPrimitives.WriteUInt32BigEndian(len, Crc32(typeAndData));
        s.Write(len);
    }

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
        }
        return ~crc;
    }
}
