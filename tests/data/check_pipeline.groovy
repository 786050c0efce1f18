// Compile Jenkins pipeline files with Groovy's own compiler, without running them.
//
//   groovy check_pipeline.groovy FILE...
//
// A file fails when it does not compile (syntax, unresolvable class), or when an
// `sh` step's script is anything but a plain string: a GString ("...${x}") is
// substituted by Groovy before the shell runs, which is how secrets leak into
// the command text (see jenkins/vars/cdRelease.groovy). Prints "ok FILE" or
// "FAILED FILE: why" per file; exits 1 when any failed. Used by tests/test_groovy.py.
import org.codehaus.groovy.ast.ClassNode
import org.codehaus.groovy.ast.CodeVisitorSupport
import org.codehaus.groovy.ast.ModuleNode
import org.codehaus.groovy.ast.expr.ConstantExpression
import org.codehaus.groovy.ast.expr.Expression
import org.codehaus.groovy.ast.expr.MapExpression
import org.codehaus.groovy.ast.expr.MethodCallExpression
import org.codehaus.groovy.ast.expr.TupleExpression
import org.codehaus.groovy.control.CompilationFailedException
import org.codehaus.groovy.control.CompilationUnit
import org.codehaus.groovy.control.Phases

class ShellScripts extends CodeVisitorSupport {
    Set<String> problems = new TreeSet<String>()

    void visitMethodCallExpression(MethodCallExpression call) {
        if (call.methodAsString == 'sh') {
            Expression arguments = call.arguments
            List<Expression> given = arguments instanceof TupleExpression ? arguments.expressions : [arguments]
            for (Expression e : given) {
                if (e instanceof MapExpression) {
                    e.mapEntryExpressions.findAll { it.keyExpression.text == 'script' }.each { check(it.valueExpression, call) }
                } else {
                    check(e, call)
                }
            }
        }
        super.visitMethodCallExpression(call)
    }

    void check(Expression script, MethodCallExpression call) {
        if (!(script instanceof ConstantExpression)) {
            problems << "line ${call.lineNumber}: sh script is ${script.getClass().simpleName}, not a plain (single-quoted) string".toString()
        }
    }
}

int failed = 0
for (String path : args) {
    CompilationUnit unit = new CompilationUnit()
    unit.addSource(new File(path))
    try {
        unit.compile(Phases.CLASS_GENERATION)
    } catch (CompilationFailedException e) {
        failed++
        System.out.println("FAILED ${path}: does not compile\n${e.message}")
        continue
    }
    ShellScripts visitor = new ShellScripts()
    for (ModuleNode module : unit.AST.modules) {
        module.statementBlock.visit(visitor)
        for (ClassNode cls : module.classes) {
            cls.methods.each { it.code?.visit(visitor) }
        }
    }
    if (visitor.problems) {
        failed++
        System.out.println("FAILED ${path}: " + visitor.problems.join("; "))
    } else {
        System.out.println("ok ${path}")
    }
}
System.exit(failed ? 1 : 0)
