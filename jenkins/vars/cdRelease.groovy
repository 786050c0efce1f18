// cdRelease: run a cdtools release from a Jenkinsfile, with registry credentials.
//
// In a Jenkinsfile, once the library is configured (see jenkins/README.md):
//
//     @Library('cdtools') _
//     ...
//     steps {
//         cdRelease(config: 'cdtools.json', credentialsId: 'registry-ci')
//     }
//
// Arguments, all optional:
//   config         release config in the workspace            default 'cdtools.json'
//   credentialsId  a "Username with password" credential for the registry; without
//                  it cdtools uses ~/.docker/config.json, or pushes anonymously
//   pyz            the zipapp                                 default $CDTOOLS_PYZ, else 'cdtools.pyz'
//   python         the interpreter, one word                  default 'python3'
//   report, junit  the report files it writes                 default 'cdtools-report.json', '.xml'
//   dryRun         rehearse: print the plan, change nothing   default false
//   timestamps     prefix each output line with a UTC time    default false
//
// Why the shell script below is single-quoted: the password must reach cdtools
// through the environment only. A single-quoted Groovy string is never
// interpolated, so the *shell* expands "$CDRELEASE_CONFIG" at run time and cdtools
// reads CDTOOLS_REGISTRY_PASSWORD itself. A double-quoted GString with ${...}
// would paste the value into the command text before the shell runs it: Jenkins
// keeps that text (the build log with `sh -x`, pipeline step records), the
// agent's process list shows it, and the credentials masking can only guess at
// it. Groovy interpolation leaks secrets. The same interpolation would also let a
// path containing shell syntax run commands, so even the non-secret arguments go
// to the script through withEnv, quoted by the shell, not pasted into it.

def call(Map args = [:]) {
    List<String> known = ['config', 'credentialsId', 'pyz', 'python', 'report', 'junit', 'dryRun', 'timestamps']
    List unknown = args.keySet().findAll { !(it in known) } as List
    if (unknown) {
        error("cdRelease: unknown argument(s) ${unknown.join(', ')}; known: ${known.join(', ')}")
    }

    String config = args.config ?: 'cdtools.json'
    String pyz = args.pyz ?: (env.CDTOOLS_PYZ ?: 'cdtools.pyz')
    String python = args.python ?: 'python3'
    String report = args.report ?: 'cdtools-report.json'
    String junitFile = args.junit ?: 'cdtools-report.xml'
    // fixed words only: this list is expanded unquoted by the shell
    List<String> flags = []
    if (args.dryRun) {
        flags << '--dry-run'
    }
    if (args.timestamps) {
        flags << '--timestamps'
    }

    Closure release = {
        withEnv(["CDRELEASE_PYTHON=${python}", "CDRELEASE_PYZ=${pyz}", "CDRELEASE_CONFIG=${config}",
                 "CDRELEASE_REPORT=${report}", "CDRELEASE_JUNIT=${junitFile}",
                 "CDRELEASE_FLAGS=${flags.join(' ')}"]) {
            try {
                // -I -S: the zipapp and the standard library only, whatever the agent has installed
                sh '"$CDRELEASE_PYTHON" -I -S "$CDRELEASE_PYZ" release --config "$CDRELEASE_CONFIG" --report "$CDRELEASE_REPORT" --junit "$CDRELEASE_JUNIT" $CDRELEASE_FLAGS'
            } finally {
                // also when the release failed: the failed step shows as a failed test case
                junit allowEmptyResults: true, testResults: junitFile
                archiveArtifacts allowEmptyArchive: true, artifacts: report
            }
        }
    }

    if (args.credentialsId) {
        withCredentials([usernamePassword(credentialsId: args.credentialsId,
                                          usernameVariable: 'CDTOOLS_REGISTRY_USERNAME',
                                          passwordVariable: 'CDTOOLS_REGISTRY_PASSWORD')]) {
            release()
        }
    } else {
        release()
    }
}
