namespace FastMM;

/// <summary>The one error type for bad input (files, fields, shapes, images, prompts): its message names what and why.</summary>
public class FastMMException : Exception
{
    public FastMMException(string message) : base(message) { }
    public FastMMException(string message, Exception inner) : base(message, inner) { }
}
