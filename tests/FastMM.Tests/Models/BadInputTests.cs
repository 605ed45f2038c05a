using System.Buffers.Binary;
using System.Text;
using FastMM.Backends;
using FastMM.Models;
using FastMM.Models.IO;
using FastMM.Tests.Support;

namespace FastMM.Tests.Models;

/// <summary>Hostile or broken model files: each gets one FastMMException naming the file/field and the problem.</summary>
public class BadInputTests
{
    private static byte[] Safetensors(string headerJson, int dataBytes, ulong? declaredHeaderLength = null)
    {
        var h = Encoding.UTF8.GetBytes(headerJson);
        var b = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(b, declaredHeaderLength ?? (ulong)h.Length);
        h.CopyTo(b, 8);
        return b;
    }

    private static FastMMException OpenFails(byte[] bytes)
    {
        using var tmp = new TestPaths.TempDir();
        File.WriteAllBytes(tmp["model.safetensors"], bytes);
        return Assert.Throws<FastMMException>(() => SafetensorsFile.Open(tmp["model.safetensors"]));
    }

    [Fact]
    public void HeaderLengthBeyondFile()
        => Assert.Contains("runs past the end", OpenFails(Safetensors("{}", 0, declaredHeaderLength: 1UL << 40)).Message);

    [Fact]
    public void HeaderLengthHuge() => Assert.Contains("runs past the end", OpenFails(Safetensors("{}", 0, ulong.MaxValue)).Message);

    [Fact]
    public void FileShorterThanLengthPrefix() => Assert.Contains("too short", OpenFails([1, 2, 3]).Message);

    [Fact]
    public void NonJsonHeader() => Assert.Contains("not valid JSON", OpenFails(Safetensors("{not json", 0)).Message);

    [Fact]
    public void HeaderNotAnObject() => Assert.Contains("JSON object", OpenFails(Safetensors("[1,2]", 0)).Message);

    [Fact]
    public void TruncatedData()
    {
        var e = OpenFails(Safetensors("""{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8));
        Assert.Contains("'w'", e.Message);
        Assert.Contains("past the end of the data section", e.Message);
    }

    [Fact]
    public void OverlappingOffsets()
    {
        var e = OpenFails(Safetensors("""{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}""", 24));
        Assert.Contains("overlap", e.Message);
    }

    [Fact]
    public void NegativeOrBogusOffsets()
        => Assert.Contains("invalid data offset", OpenFails(Safetensors("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}""", 8)).Message);

    [Fact]
    public void UnknownDtype()
    {
        var e = OpenFails(Safetensors("""{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}""", 8));
        Assert.Contains("unknown dtype 'Q9'", e.Message);
    }

    [Fact]
    public void ShapeByteCountMismatch()
    {
        var e = OpenFails(Safetensors("""{"a":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}""", 8));
        Assert.Contains("needs 6", e.Message);
    }

    [Fact]
    public void ShapeOverflow()
        => Assert.Contains("'a'", OpenFails(Safetensors("""{"a":{"dtype":"F32","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,4]}}""", 8)).Message);

    [Fact]
    public void DeeplyNestedHeaderIsRejectedNotCrashing()
    {
        string deep = new string('[', 10000) + new string(']', 10000);
        Assert.Contains("not valid JSON", OpenFails(Safetensors(deep, 0)).Message);
    }

    [Fact]
    public void UnsupportedDtypeIsOnlyAnErrorWhenUsed()
    {
        using var tmp = new TestPaths.TempDir();
        File.WriteAllBytes(tmp["model.safetensors"], Safetensors("""{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}""", 8));
        using var f = SafetensorsFile.Open(tmp["model.safetensors"]);
        Assert.True(f.TryGet("a", out var t));
        var e = Assert.Throws<FastMMException>(() => t.ToFloatArray());
        Assert.Contains("U8", e.Message);
    }

    /// <summary>Copies a tiny model folder so a test can break one file of it.</summary>
    private static TestPaths.TempDir CopyModel(string name)
    {
        var tmp = new TestPaths.TempDir();
        foreach (var f in Directory.GetFiles(TestPaths.Model(name))) File.Copy(f, tmp[Path.GetFileName(f)]);
        return tmp;
    }

    private static FastMMException LoadFails(string dir)
    {
        using var backend = new CpuBackend();
        return Assert.Throws<FastMMException>(() => ModelLoader.LoadDualEncoder(dir, backend));
    }

    [Fact]
    public void TruncatedWeightFileInAModelFolder()
    {
        using var tmp = CopyModel("tiny-clip");
        var bytes = File.ReadAllBytes(tmp["model.safetensors"]);
        File.WriteAllBytes(tmp["model.safetensors"], bytes[..(bytes.Length / 2)]);
        var e = LoadFails(tmp.Path);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void MissingTensor()
    {
        using var tmp = CopyModel("tiny-clip");
        // Rename one tensor in the header (same length, so offsets stay valid).
        var bytes = File.ReadAllBytes(tmp["model.safetensors"]);
        int at = IndexOf(bytes, "visual_projection.weight"u8);
        bytes[at] = (byte)'X';
        File.WriteAllBytes(tmp["model.safetensors"], bytes);
        Assert.Contains("missing tensor 'visual_projection.weight'", LoadFails(tmp.Path).Message);
    }

    [Fact]
    public void WrongShapeAgainstConfig()
    {
        using var tmp = CopyModel("tiny-clip");
        File.WriteAllText(tmp["config.json"], File.ReadAllText(tmp["config.json"]).Replace("\"projection_dim\": 24", "\"projection_dim\": 25"));
        var e = LoadFails(tmp.Path);
        Assert.Contains("has shape", e.Message);
        Assert.Contains("config.json implies", e.Message);
    }

    [Fact]
    public void UnsupportedModelType()
    {
        using var tmp = CopyModel("tiny-clip");
        File.WriteAllText(tmp["config.json"], File.ReadAllText(tmp["config.json"]).Replace("\"model_type\": \"clip\"", "\"model_type\": \"blip\""));
        var e = LoadFails(tmp.Path);
        Assert.Contains("model_type 'blip' is not supported", e.Message);
    }

    [Fact]
    public void MissingModelType()
    {
        using var tmp = CopyModel("tiny-clip");
        File.WriteAllText(tmp["config.json"], "{}");
        Assert.Contains("model_type is missing", LoadFails(tmp.Path).Message);
    }

    [Fact]
    public void BadConfigField()
    {
        using var tmp = CopyModel("tiny-clip");
        File.WriteAllText(tmp["config.json"], File.ReadAllText(tmp["config.json"]).Replace("\"num_attention_heads\": 4", "\"num_attention_heads\": \"four\""));
        var e = LoadFails(tmp.Path);
        Assert.Contains("num_attention_heads must be an integer", e.Message);
    }

    [Fact]
    public void HeadsNotDividingHidden()
    {
        using var tmp = CopyModel("tiny-clip");
        File.WriteAllText(tmp["config.json"], File.ReadAllText(tmp["config.json"]).Replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5"));
        Assert.Contains("not divisible", LoadFails(tmp.Path).Message);
    }

    [Fact]
    public void ConfigNotJson()
    {
        using var tmp = CopyModel("tiny-clip");
        File.WriteAllText(tmp["config.json"], "{\"model_type\": ");
        Assert.Contains("config.json: not valid JSON", LoadFails(tmp.Path).Message);
    }

    [Fact]
    public void NoWeights()
    {
        using var tmp = CopyModel("tiny-clip");
        File.Delete(tmp["model.safetensors"]);
        Assert.Contains("no model.safetensors", LoadFails(tmp.Path).Message);
    }

    [Fact]
    public void ShardIndexWithPathTraversal()
    {
        using var tmp = CopyModel("tiny-clip-f16");
        File.WriteAllText(tmp["model.safetensors.index.json"], """{"weight_map": {"logit_scale": "../../etc/passwd"}}""");
        Assert.Contains("is not a file name in the model folder", LoadFails(tmp.Path).Message);
    }

    [Fact]
    public void ShardMissing()
    {
        using var tmp = CopyModel("tiny-clip-f16");
        File.Delete(tmp["model-00002-of-00002.safetensors"]);
        Assert.Contains("shard 'model-00002-of-00002.safetensors'", LoadFails(tmp.Path).Message);
    }

    [Fact]
    public void MissingFolder() => Assert.Contains("model folder not found", LoadFails("/nonexistent/model").Message);

    [Fact]
    public void TokenIdOutsideVocabulary()
    {
        using var backend = new CpuBackend();
        using var m = ModelLoader.LoadDualEncoder(TestPaths.Model("tiny-clip"), backend);
        var ids = new int[77]; ids[0] = 998; ids[1] = 5000; ids[2] = 999;
        var e = Assert.Throws<FastMMException>(() => m.EmbedTexts(new TextInput(1, 77, ids, null)));
        Assert.Contains("5000", e.Message);
        Assert.Contains("vocabulary", e.Message);
    }

    [Fact]
    public void SequenceLongerThanPositions()
    {
        using var backend = new CpuBackend();
        using var m = ModelLoader.LoadDualEncoder(TestPaths.Model("tiny-clip"), backend);
        var e = Assert.Throws<FastMMException>(() => m.EmbedTexts(new TextInput(1, 78, new int[78], null)));
        Assert.Contains("max_position_embeddings 77", e.Message);
    }

    private static int IndexOf(byte[] hay, ReadOnlySpan<byte> needle) => hay.AsSpan().IndexOf(needle);
}
